"""Unit tests: id maps, matrices, metrics, model round trip, windows, verdicts, artifacts."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from trainer.core.errors import ConcurrentUpdateError, TrainerError
from trainer.data.date_windows import lookback, parse_date, split_window
from trainer.data.events import parse_event_weights
from trainer.data.synthetic import SyntheticSpec, generate, generate_chunks
from trainer.evaluation.promotion_rule import decide
from trainer.evaluation.ranking_metrics import popularity_ranking, ranking_metrics
from trainer.model.idmap import IdMap
from trainer.model.matrices import CFMatrices, build_csr, build_window, remove_seen
from trainer.model.model_artifact import ModelArtifact, load_model
from trainer.model.topk import top_unseen
from trainer.storage import artifacts
from trainer.train_task import fit, model_id_for

D = dt.date


def test_idmap_is_sorted_unique_and_maps_both_ways():
    ids = IdMap(["b", "a", "c", "a"])
    assert list(ids.ids) == ["a", "b", "c"]
    assert list(ids.index_of(["c", "a", "zzz"])) == [2, 0, -1]
    assert list(ids.id_of(np.array([1, 2]))) == ["b", "c"]
    assert IdMap(["c", "b", "a"]) == ids and IdMap(["a"]) != ids


def test_idmap_takes_arrow_columns_and_skips_missing_ids():
    events = pa.chunked_array([["u2", None], ["u1", "u2"]])  # a column as BigQuery's reads give it
    ids = IdMap(events)
    assert list(ids.ids) == ["u1", "u2"]
    assert list(ids.index_of(events)) == [1, -1, 0, 1]
    assert list(ids.index_of(np.array(["u1", "u9"]))) == [0, -1]
    assert len(IdMap([])) == 0 and list(IdMap([]).index_of(["u1"])) == [-1]


def test_encoding_a_column_of_many_chunks_gives_each_row_its_index_in_the_sorted_map():
    # Chunks whose ids first appear in different chunks: the codes must index the one sorted map.
    column = pa.chunked_array([["u3", "u1"], [], ["u2", "u3", "u0"], ["u1"]])
    idmap, codes = IdMap.encode(column)
    assert list(idmap.ids) == ["u0", "u1", "u2", "u3"]
    assert codes.dtype == np.int32
    assert list(idmap.id_of(codes)) == ["u3", "u1", "u2", "u3", "u0", "u1"]
    assert list(codes) == list(idmap.index_of(column))
    empty, none = IdMap.encode(pa.chunked_array([], pa.string()))
    assert len(empty) == 0 and len(none) == 0


def _popularity_one_by_one(train: sp.csr_matrix, k: int) -> np.ndarray:
    """The definition, user by user: the k most popular items the user has not seen."""
    order = np.argsort(-np.asarray((train > 0).sum(axis=0)).ravel(), kind="stable")
    out = np.full((train.shape[0], k), -1, dtype=np.int64)
    for u in range(train.shape[0]):
        unseen = [i for i in order if i not in set(train.indices[train.indptr[u]:train.indptr[u + 1]])][:k]
        out[u, : len(unseen)] = unseen
    return out


@pytest.mark.parametrize(("items", "density", "head"), [(40, 0.5, 3), (300, 0.05, 64), (12, 0.9, 64)])
def test_popularity_ranking_equals_its_definition(items, density, head):
    """Vectorised over the head of the catalogue, with the users who saw most of it (and the
    ones with fewer than k unseen items) done one by one."""
    train = sp.random(400, items, density=density, format="csr", random_state=items, dtype=np.float32)
    assert np.array_equal(popularity_ranking(train, 10, head=head), _popularity_one_by_one(train, 10))


def test_build_csr_sums_duplicates_and_ignores_unknown_ids():
    rows = pa.table({"user_id": ["u1", "u1", "u2", "ghost"], "item_id": ["i2", "i2", "i1", "i1"],
                     "weight": [1.0, 2.5, 4.0, 9.0]})
    users, items = IdMap(["u1", "u2"]), IdMap(["i1", "i2"])
    m = build_csr(rows, users, items)
    assert m.shape == (2, 2) and m.dtype == np.float32
    assert m.toarray().tolist() == [[0.0, 3.5], [4.0, 0.0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_build_window_equals_each_matrix_built_from_its_own_rows(seed):
    """One pass over the window gives what building train, holdout and the whole window from
    their own rows gives: users only in the holdout days, items only there, pairs in both."""
    rng = np.random.default_rng(seed)
    n = 3000
    user_ids = np.array([f"u{u}" for u in rng.integers(0, 300, n)], dtype=object)
    item_ids = np.array([f"i{i}" for i in rng.integers(0, 80, n)], dtype=object)
    late = rng.random(n) < 0.2
    user_ids[late] += rng.choice(["", "", "new"], int(late.sum()))
    item_ids[late] += rng.choice(["", "", "", "new"], int(late.sum()))
    window = pa.table({"user_id": user_ids, "item_id": item_ids, "in_holdout": late,
                       "weight": rng.choice([1.0, 2.0, 4.0], n)})
    train_rows, holdout_rows = window.filter(pa.array(~late)), window.filter(pa.array(late))
    users, items = IdMap(train_rows["user_id"]), IdMap(train_rows["item_id"])
    train = build_csr(train_rows, users, items)
    holdout = remove_seen(build_csr(holdout_rows, users, items), train)
    window_users = IdMap(window["user_id"])

    built = build_window(window)
    assert built.users == users and built.items == items and built.window_users == window_users
    assert (built.train != train).nnz == 0 and built.train.dtype == np.float32
    assert (built.holdout != holdout).nnz == 0
    assert (built.whole != build_csr(window, window_users, items)).nnz == 0
    assert built.holdout_cold_users == len(set(user_ids[late]) - set(users.ids)) > 0


def test_remove_seen_keeps_only_new_pairs():
    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 2, 0]], dtype=np.float32))
    holdout = sp.csr_matrix(np.array([[3, 1, 0], [0, 5, 1]], dtype=np.float32))
    assert remove_seen(holdout, train).toarray().tolist() == [[0, 1, 0], [0, 0, 1]]


def test_ranking_metrics_match_a_hand_computed_example():
    # user 0: relevant {1, 5}, hit at rank 2; user 1: relevant {3}, hit at rank 1 (last slot empty)
    recommended = np.array([[0, 1, 2], [3, 4, -1]])
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0]], dtype=np.float32))
    m = ranking_metrics(recommended, relevant, k=3)
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["map"] == pytest.approx(((1 / 2) / 2 + 1) / 2)
    assert m["ndcg"] == pytest.approx((ndcg_user0 + 1) / 2)
    assert m["coverage"] == pytest.approx(5 / 6)
    assert m["users"] == 2


def test_ranking_metrics_ignore_users_without_relevant_items():
    recommended = np.array([[0, 1], [1, 0]])
    relevant = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    m = ranking_metrics(recommended, relevant, k=2)
    assert m["users"] == 1 and m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0


def test_ranking_metrics_of_a_model_that_knows_none_of_the_items_are_zero():
    # A published model from a renumbered catalogue: every slot maps to no matrix item.
    relevant = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    m = ranking_metrics(np.full((2, 3), -1), relevant, k=3)
    assert (m["precision"], m["recall"], m["map"], m["ndcg"], m["coverage"], m["users"]) == (0, 0, 0, 0, 0, 2)


def test_popularity_ranking_excludes_seen_items():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
    ranking = popularity_ranking(train, k=2)
    assert ranking[0].tolist() == [2, 3]       # 0 and 1 seen; 2 is next most popular
    assert ranking[1].tolist() == [1, 2]
    assert ranking[2].tolist() == [3, -1]      # only one unseen item left


def test_window_and_holdout_arithmetic():
    assert lookback(D(2026, 11, 29), 30).start == D(2026, 10, 31)
    w = split_window(D(2026, 11, 29), lookback_days=30, holdout_days=2)
    assert (w.train.start, w.train.end) == (D(2026, 10, 31), D(2026, 11, 27))
    assert (w.holdout.start, w.holdout.end) == (D(2026, 11, 28), D(2026, 11, 29))
    assert w.train.days + w.holdout.days == w.full.days == 30
    assert split_window(D(2026, 3, 1), 2, 1).train.end == D(2026, 2, 28)  # across month end
    assert split_window(D(2026, 11, 29), 5, 0).holdout is None
    with pytest.raises(TrainerError, match="holdout_days"):
        split_window(D(2026, 11, 29), 2, 2)
    with pytest.raises(TrainerError, match="lookback_days"):
        lookback(D(2026, 11, 29), 0)
    with pytest.raises(TrainerError, match="YYYY-MM-DD"):
        parse_date("29/11/2026")


def test_event_weights_parse_and_reject_nonsense():
    assert parse_event_weights("view=1, complete=4.5") == {"view": 1.0, "complete": 4.5}
    for bad in ("view", "view=x", "view=-1", "=2", ""):
        with pytest.raises(TrainerError):
            parse_event_weights(bad)


def test_verdict_requires_margin_over_popularity_and_no_regression():
    pop = {"recall": 0.20}
    assert decide({"recall": 0.22}, pop, None, "recall", 0.05, 0.02).passed
    assert not decide({"recall": 0.205}, pop, None, "recall", 0.05, 0.02).passed
    assert not decide({"recall": 0.0}, {"recall": 0.0}, None, "recall", 0.0, 0.02).passed
    published = {"recall": 0.30}
    assert decide({"recall": 0.295}, pop, published, "recall", 0.05, 0.02).passed
    failed = decide({"recall": 0.28}, pop, published, "recall", 0.05, 0.02)
    assert not failed.passed and "regresses" in failed.reasons[-1]


def test_matrices_round_trip():
    train = sp.csr_matrix(np.array([[1, 0], [0, 2]], dtype=np.float32))
    m = CFMatrices(IdMap(["u1", "u2"]), IdMap(["a", "b"]), train, None)
    back = CFMatrices.from_bytes(m.to_bytes())
    assert back.users == m.users and back.items == m.items and back.holdout is None
    assert (back.train != train).nnz == 0


def _planted_matrix(seed: int = 0) -> sp.csr_matrix:
    """Two groups of users, each interacting only with their half of the items."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((40, 20), dtype=np.float32)
    for u in range(40):
        half = range(0, 10) if u < 20 else range(10, 20)
        for i in rng.choice(list(half), size=5, replace=False):
            dense[u, i] = 1.0
    return sp.csr_matrix(dense)


def test_model_save_load_round_trip_and_recommendations(tmp_path):
    train = _planted_matrix()
    params = {"factors": 4, "regularization": 0.01, "alpha": 2.0, "iterations": 10,
              "random_seed": 1, "num_threads": 1}
    uf, itf, loss = fit(train, params)
    assert np.isfinite(loss)
    users, items = IdMap([f"u{i:02d}" for i in range(40)]), IdMap([f"i{i:02d}" for i in range(20)])
    model = ModelArtifact("m1", users, items, uf, itf,
                          np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float32),
                          params, {"note": "test"})
    store = artifacts.ArtifactStore()
    model.save(store, str(tmp_path / "m1"))
    loaded = load_model(store, str(tmp_path / "m1"))
    assert loaded.model_id == "m1" and loaded.params == params and loaded.users == users
    np.testing.assert_array_equal(loaded.item_factors, itf)

    ids, scores = loaded.recommend(train[:1], n=3)
    # user 0 is in the first group: recommends unseen items of its own half, best first
    assert set(ids[0]) <= set(range(10)) - set(train[0].indices)
    assert list(scores[0]) == sorted(scores[0], reverse=True)
    # a user with no known item gets the most popular items
    cold_ids, _ = loaded.recommend(sp.csr_matrix((1, 20), dtype=np.float32), n=2)
    assert list(cold_ids[0]) == list(np.argsort(-model.item_popularity, kind="stable")[:2])

    (tmp_path / "m1" / "model.npz").write_bytes(b"damaged")
    with pytest.raises(TrainerError, match="checksum"):
        load_model(store, str(tmp_path / "m1"))


def test_trained_users_are_recomputed_from_their_factors_and_others_exactly():
    """Scoring recomputes each user's factors: a user the model knows by id with training's own
    conjugate-gradient step from its trained factors, which lands where the exact solve does;
    a user it does not know with the exact solve itself (the same result as giving no ids)."""
    rng = np.random.default_rng(3)
    topic = rng.integers(0, 6, size=300)
    dense = np.zeros((300, 60), dtype=np.float32)
    for u in range(300):
        own = np.flatnonzero(np.arange(60) % 6 == topic[u])
        dense[u, rng.choice(own, size=4, replace=False)] = rng.choice([1.0, 2.0, 4.0], size=4)
        dense[u, rng.integers(0, 60)] += 1.0  # one off-topic item
    train = sp.csr_matrix(dense)
    params = {"factors": 16, "regularization": 0.05, "alpha": 2.0, "iterations": 15,
              "random_seed": 1, "num_threads": 1}
    uf, itf, _ = fit(train, params)
    users = IdMap([f"u{i:03d}" for i in range(300)])
    model = ModelArtifact("m1", users, IdMap([f"i{i:02d}" for i in range(60)]), uf, itf,
                          np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float32), params, {})

    exact_ids, exact_scores = model.recommend(train, n=5)
    warm_ids, warm_scores = model.recommend(train, n=5, user_ids=users.ids)
    same = np.mean([set(a) == set(b) for a, b in zip(warm_ids, exact_ids, strict=True)])
    # From zeros instead of the trained factors the same three steps miss: 95 %, 0.018 (measured).
    assert same >= 0.98, f"only {same:.0%} of trained users got the exact solve's top 5"
    np.testing.assert_allclose(warm_scores, exact_scores, rtol=0, atol=0.005)

    strangers = np.array([f"new{i:03d}" for i in range(300)])
    new_ids, new_scores = model.recommend(train, n=5, user_ids=strangers)
    np.testing.assert_array_equal(new_ids, exact_ids)
    np.testing.assert_array_equal(new_scores, exact_scores)
    # Known and unknown users mixed in one batch: each row is scored by its own rule.
    mixed = np.where(np.arange(300) % 2 == 0, users.ids, strangers)
    mixed_ids, _ = model.recommend(train, n=5, user_ids=mixed)
    np.testing.assert_array_equal(mixed_ids[1::2], exact_ids[1::2])
    np.testing.assert_array_equal(mixed_ids[0::2], warm_ids[0::2])


@pytest.mark.parametrize("n_items, counts", [
    (400, list(range(1, 8)) * 15 + [60, 64]),  # light users
    (14, list(range(0, 15))),  # a small catalogue: some users have fewer unseen items than n
    (400, [3] * 100 + list(range(100, 300, 12)) + [395, 397, 399]),  # heavy users
])
@pytest.mark.parametrize("sample, buffer_elements", [
    (10_000, 1 << 24),  # the defaults: one chunk, every score sorted against the bound
    (20, 1_000),  # bounds from 20 items and chunks of a few rows, on two threads
])
def test_top_unseen_items_are_implicits_filtered_top_n(n_items, counts, sample, buffer_elements):
    """The top-n unseen items are exactly implicit's own filtered ``recommend``, in its order,
    however small the sample that bounds each row and however the rows are chunked; where a
    user has fewer unseen items than n, those items and then empty slots (implicit pads with
    seen items at the lowest float)."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(5)
    n, counts = 10, np.array(counts)
    seen = sp.csr_matrix(np.stack([np.isin(np.arange(n_items), rng.choice(n_items, c, replace=False))
                                   for c in counts]).astype(np.float32))
    users = rng.normal(size=(len(counts), 16)).astype(np.float32)
    items = rng.normal(size=(n_items, 16)).astype(np.float32)

    ids, scores = top_unseen(items, users, seen, n, num_threads=2, sample=sample,
                             buffer_elements=buffer_elements)

    als = AlternatingLeastSquares(factors=16)
    als.user_factors, als.item_factors = users, items
    want_ids, want_scores = als.recommend(np.arange(len(counts)), seen, N=n,
                                          filter_already_liked_items=True)
    full = np.flatnonzero(n_items - counts >= n)
    np.testing.assert_array_equal(ids[full], want_ids[full])
    np.testing.assert_allclose(scores[full], want_scores[full], rtol=1e-6)
    for row in np.flatnonzero(n_items - counts < n):
        unseen = np.setdiff1d(np.arange(n_items), seen[row].indices)
        np.testing.assert_array_equal(ids[row][:len(unseen)], want_ids[row][:len(unseen)])
        assert (ids[row][len(unseen):] == -1).all() and np.isnan(scores[row][len(unseen):]).all()
    assert not any(set(ids[r]) & set(seen[r].indices) for r in range(len(counts)))


def test_top_unseen_keeps_every_tie_at_the_bound_and_orders_ties_by_item():
    """Rows whose sample is all seen (no finite bound) and rows of equal scores (a user with
    zero factors scores every item 0) still get their best unseen items, ties in item order."""
    n_items, n = 50, 5
    items = np.random.default_rng(3).normal(size=(n_items, 4)).astype(np.float32)
    users = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32)
    dense = np.zeros((3, n_items), dtype=np.float32)
    dense[2, :20] = 1  # the whole sample of row 2 is seen
    seen = sp.csr_matrix(dense)

    ids, scores = top_unseen(items, users, seen, n, sample=20, buffer_elements=n_items)

    np.testing.assert_array_equal(ids[0], np.arange(n))
    assert (scores[0] == 0).all()
    by_score = np.lexsort((np.arange(n_items), -items[:, 0]))
    np.testing.assert_array_equal(ids[1], by_score[:n])
    np.testing.assert_array_equal(ids[2], [i for i in by_score if i >= 20][:n])
    np.testing.assert_allclose(scores[2], items[ids[2], 0])


def test_model_id_is_content_addressed():
    p = {"factors": 8, "iterations": 5, "num_threads": 0}
    same_but_threads = {**p, "num_threads": 4}
    assert model_id_for(D(2026, 1, 2), "abc", p) == model_id_for(D(2026, 1, 2), "abc", same_but_threads)
    assert model_id_for(D(2026, 1, 2), "abc", p) != model_id_for(D(2026, 1, 2), "abd", p)
    assert model_id_for(D(2026, 1, 2), "abc", p).startswith("als-20260102-")


def test_local_compare_and_swap_detects_a_concurrent_writer(tmp_path):
    store = artifacts.ArtifactStore()
    uri = str(tmp_path / "models" / "LATEST")
    store.compare_and_swap(uri, b"v1", None)
    first = store.read_versioned(uri)
    assert first.data == b"v1"
    with pytest.raises(ConcurrentUpdateError):
        store.compare_and_swap(uri, b"v2", None)  # expected "absent", but it exists
    store.compare_and_swap(uri, b"v2", first.generation)
    with pytest.raises(ConcurrentUpdateError):
        store.compare_and_swap(uri, b"v3", first.generation)  # stale generation
    assert store.read_bytes(uri) == b"v2"


def _counts(table: pa.Table, column: str, keys: list[str]) -> np.ndarray:
    import pyarrow.compute as pc

    found = {d["values"]: d["counts"] for d in pc.value_counts(table[column]).to_pylist()}
    return np.array([found.get(k, 0) for k in keys])


def test_generated_chunks_are_numbered_events_of_one_world_and_one_chunk_is_generate():
    import pyarrow.compute as pc

    spec = SyntheticSpec(events=60_000)
    whole = generate(spec)
    assert [t.equals(whole) for t in generate_chunks(spec)] == [True]
    chunks = list(generate_chunks(spec, 7000))
    assert [len(t) for t in chunks] == [7000] * 8 + [4000]
    chunked = pa.concat_tables(chunks)
    assert chunked["event_id"].to_pylist() == [f"{spec.id_prefix}{i}" for i in range(60_000)]
    assert spec.id_prefix.startswith("s42-") and SyntheticSpec(days=29).id_prefix != spec.id_prefix
    assert pc.min_max(chunked["event_date"]).as_py() == pc.min_max(whole["event_date"]).as_py()
    # The same users' activity and items' popularity (another seed's world shares neither).
    other = generate(SyntheticSpec(events=60_000, seed=7))
    for column in ("user_id", "item_id"):
        keys = sorted(set(whole[column].to_pylist()) | set(other[column].to_pylist()))
        reference = _counts(whole, column, keys)
        assert np.corrcoef(reference, _counts(chunked, column, keys))[0, 1] > 0.9, column
        assert np.corrcoef(reference, _counts(other, column, keys))[0, 1] < 0.5, column
