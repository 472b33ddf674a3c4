"""Event ids a careless app gets wrong: replayed and conflicting duplicates, null event ids,
outsized ids and ids that differ only by a control character.

Events with the same ``event_id`` count once everywhere the trainer reads them (the matrices,
``event_stats``, predict's window, feedback); the copies are counted, and a copy whose content
differs is a counted conflict, resolved the same way every time. An id longer than
``--max-id-bytes`` or holding a control character is a bad row, dropped and counted; every
other id round-trips exactly, whatever its length or characters.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tracemalloc
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trainer_support.helpers import RUN_DATE, TRAIN_ARGS, load_events, query, seed

from trainer.data.date_windows import split_window
from trainer.data.events import EventSource
from trainer.data.shards import Shard
from trainer.model.idmap import IdMap
from trainer.model.matrices import CFMatrices
from trainer.storage import tables

WEIGHTS = {"view": 1.0, "start": 2.0, "complete": 4.0}


def _events_table(project: str, dataset: str) -> str:
    return tables.table_id(project, dataset, tables.EVENTS)


def _replay(client, project: str, dataset: str, day: dt.date, share: float, seed_: int = 7) -> int:
    """Append copies of ``share`` of ``day``'s rows (same ids, same content), as an app that sent
    a batch again; returns how many rows were copied."""
    rows = query(client, f"SELECT * FROM `{_events_table(project, dataset)}` WHERE event_date = '{day}'")
    rng = np.random.default_rng(seed_)
    copies = [r for r in rows if rng.random() < share] if share < 1 else rows
    load_events(client, project, dataset, copies)
    return len(copies)


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def _pipeline(step, client, project: str, dataset: str, art: Path) -> dict:
    """create_cf_matrices -> train -> predict (the trained model) for RUN_DATE; what they wrote."""
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", str(art))
    rc, err = step("create_cf_matrices_task", *common, "--lookback-days", "20")
    assert rc == 0, err
    rc, err = step("train_task", *common, *TRAIN_ARGS[2:])
    assert rc == 0, err
    run = art / "runs" / str(RUN_DATE)
    model_uri = json.loads((run / "candidate.json").read_text())["model_uri"]
    rc, err = step("predict_task", *common, "--lookback-days", "20", "--model-uri", model_uri)
    assert rc == 0, err
    recs = query(client, f"""SELECT user_id, rank, item_id, score FROM
                 `{tables.table_id(project, dataset, tables.RECOMMENDATIONS)}`
                 WHERE run_date = '{RUN_DATE}' ORDER BY user_id, rank""")
    stats = query(client, f"""SELECT * FROM `{tables.table_id(project, dataset, tables.EVENT_STATS)}`
                  WHERE run_date = '{RUN_DATE}'""")
    return {"matrices": _npz(run / "matrices.npz"), "window": _npz(run / "window.npz"),
            "model": _npz(Path(model_uri) / "model.npz"),
            "manifest": json.loads((run / "manifest.json").read_text()),
            "recommendations": recs, "event_stats": stats[0]}


def test_a_day_replayed_whole_or_in_part_trains_and_predicts_exactly_as_the_clean_day(
        step, bq_client, project, dataset, tmp_path):
    """The property: replaying a training day whole, then 30 % of the run date itself, leaves the
    matrices, the window, the model's factors and the recommendations exactly as the clean data
    gave them; the copies are counted in the manifest and in ``event_stats``."""
    seed(step)
    clean = _pipeline(step, bq_client, project, dataset, tmp_path / "clean")

    whole = _replay(bq_client, project, dataset, RUN_DATE - dt.timedelta(days=5), 1.0)
    replayed = _pipeline(step, bq_client, project, dataset, tmp_path / "whole")
    part = _replay(bq_client, project, dataset, RUN_DATE, 0.3)
    partly = _pipeline(step, bq_client, project, dataset, tmp_path / "part")
    assert whole > 500 and part > 0

    for run in (replayed, partly):
        for name in ("matrices", "window", "model"):
            _same_arrays(clean[name], run[name])
        assert run["recommendations"] == clean["recommendations"]
    assert clean["manifest"]["quality"]["duplicate_rows"] == 0
    for run, copies in ((replayed, whole), (partly, whole + part)):
        quality = run["manifest"]["quality"]
        assert quality["duplicate_rows"] == copies and quality["conflicting_rows"] == 0
        assert quality["rows_read"] == clean["manifest"]["quality"]["rows_read"] + copies
        assert quality["valid_rows"] == clean["manifest"]["quality"]["valid_rows"]
        assert quality["bad_rows"] == clean["manifest"]["quality"]["bad_rows"]
    # The run date's statistics count each event once, and say how many copies the day had.
    assert partly["event_stats"]["events"] == clean["event_stats"]["events"]
    assert partly["event_stats"]["duplicate_rows"] == part
    assert replayed["event_stats"]["duplicate_rows"] == 0
    summary = json.loads((tmp_path / "part" / "runs" / str(RUN_DATE) / "event_stats.json").read_text())
    assert f"{part:,} duplicate" in summary["summary"][0]


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _row(event_id, user, item, kind, when: dt.datetime) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": kind,
            "event_timestamp": when, "event_date": when.date()}


def test_conflicting_copies_are_counted_and_the_earliest_wins_everywhere(bq_client, project, dataset):
    """The same id with different content: the copy with the earliest timestamp counts, then the
    smallest (user_id, item_id, event_type); the others are conflicts. A null event id is a bad
    row. The same resolution in the window read, a shard's read and the quality counts."""
    day = RUN_DATE - dt.timedelta(days=3)
    load_events(bq_client, project, dataset, [
        _row("e1", "u1", "i1", "view", _at(day, 10)),
        _row("e1", "u2", "i2", "complete", _at(day, 9)),  # earlier: this one counts
        _row("e2", "u3", "i3", "view", _at(day, 8)),
        _row("e2", "u3", "i1", "view", _at(day, 8)),  # same time: item i1 < i3 counts
        _row("e3", "u4", "i4", "start", _at(day, 7)),
        _row("e3", "u4", "i4", "start", _at(day, 7)),  # an exact copy
        _row("e3", "u4", "i4", "start", _at(day, 7)),
        _row(None, "u5", "i5", "view", _at(day, 6)),  # no event id: a bad row
        _row("e4", "u5", "i5", "view", _at(day, 6)),
    ])
    source = EventSource(bq_client, _events_table(project, dataset))
    window = split_window(RUN_DATE, 10, 0).full
    report, rows = source.read_checked(window, WEIGHTS, 1.0)
    assert (report.rows_read, report.valid_rows, report.duplicate_rows, report.conflicting_rows,
            report.null_event_id, report.bad_rows) == (9, 4, 4, 2, 1, 1)
    assert source.quality(window, WEIGHTS) == report
    pairs = {(r["user_id"], r["item_id"]): (r["weight"], r["events"]) for r in rows.to_pylist()}
    assert pairs == {("u2", "i2"): (4.0, 1), ("u3", "i1"): (1.0, 1), ("u4", "i4"): (2.0, 1),
                     ("u5", "i5"): (1.0, 1)}
    sharded = [source.interactions(window, WEIGHTS, shard=Shard(i, 2)).to_pylist() for i in range(2)]
    assert {(r["user_id"], r["item_id"]): (r["weight"], r["events"]) for part in sharded
            for r in part} == pairs


def test_feedback_counts_a_replayed_or_conflicting_next_day_once(step, bq_client, project, dataset,
                                                                tmp_path):
    """The served hit rate of a next day sent twice, with a conflicting copy that would have
    made a miss a hit, equals the clean next day's."""
    from test_feedback import FOLLOWING, HISTORY, NEXT, SERVED, SERVED_ITEMS, _feedback, _serve

    history = [{"event_id": f"h{i}", **row} for i, row in enumerate(HISTORY)]
    following = [{"event_id": f"f{i}", **row} for i, row in enumerate(FOLLOWING)]
    load_events(bq_client, project, dataset, history + following)
    _serve(bq_client, project, dataset, SERVED, SERVED_ITEMS)
    columns = ("users_returning", "users_active", "model_hit_rate", "model_recall",
               "popularity_hit_rate", "popularity_recall")
    metrics = f"SELECT {', '.join(columns)} FROM `{project}.{dataset}.serving_metrics`"

    assert _feedback(step, str(tmp_path), NEXT, "--alert-min-users", "1")[0] == 0
    [clean] = query(bq_client, metrics)
    # u3's i3 (a miss) sent again later as u3's i5 (served to u3: it would be a hit) under the
    # same id, and the whole history and next day replayed.
    late = {**following[3], "item_id": "i5", "event_timestamp": _at(NEXT, 11)}
    load_events(bq_client, project, dataset, history + following + [late])
    assert _feedback(step, str(tmp_path), NEXT, "--alert-min-users", "1")[0] == 0
    [replayed] = query(bq_client, metrics)
    assert replayed == clean


def test_seeding_overlapping_ranges_with_one_seed_never_repeats_an_event_id(step, bq_client, project,
                                                                            dataset):
    seed(step, RUN_DATE)
    seed(step, RUN_DATE - dt.timedelta(days=10))  # replaces 20 days, 10 of them seeded before
    seed(step, RUN_DATE + dt.timedelta(days=3), "--days", "2", "--anomaly", "bot=0.3")
    table = _events_table(project, dataset)
    [counts] = query(bq_client, f"SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS ids FROM `{table}`")
    assert counts["n"] == counts["ids"] > 40000


# -- outsized ids -----------------------------------------------------------------------------

def test_an_id_longer_than_the_limit_is_a_counted_bad_row_and_within_it_is_kept(
        step, bq_client, project, dataset, tmp_path):
    seed(step)
    long_item = "i" + "x" * 20_000
    day = RUN_DATE - dt.timedelta(days=4)
    load_events(bq_client, project, dataset, [_row(f"long-{n}", f"u{n:03d}", long_item, "complete",
                                                  _at(day, 12)) for n in range(5)])
    common = ("--run-date", str(RUN_DATE), "--lookback-days", "20")
    rc, err = step("create_cf_matrices_task", *common, "--artifacts-uri", str(tmp_path / "a"))
    assert rc == 0, err
    manifest = json.loads((tmp_path / "a" / "runs" / str(RUN_DATE) / "manifest.json").read_text())
    assert manifest["quality"]["id_too_long"] == 5
    assert "id longer than 256 bytes=5" in err
    matrices = CFMatrices.from_bytes((tmp_path / "a" / "runs" / str(RUN_DATE) / "matrices.npz").read_bytes())
    assert long_item not in set(matrices.items.ids.tolist())

    rc, err = step("create_cf_matrices_task", *common, "--max-id-bytes", "30000",
                   "--artifacts-uri", str(tmp_path / "b"))
    assert rc == 0, err
    matrices = CFMatrices.from_bytes((tmp_path / "b" / "runs" / str(RUN_DATE) / "matrices.npz").read_bytes())
    assert long_item in set(matrices.items.ids.tolist())
    rc, err = step("create_cf_matrices_task", *common, "--max-id-bytes", "0",
                   "--artifacts-uri", str(tmp_path / "c"))
    assert rc == 2 and "--max-id-bytes must be >= 1, got 0" in err.strip().splitlines()[-1]


def _peak_bytes(build) -> int:
    tracemalloc.start()
    try:
        built = build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del built
    return peak


def test_an_id_maps_memory_does_not_depend_on_its_longest_id():
    """Fixed-width strings cost every id the longest one's width: 5,000 ids and one of 20,000
    characters were 400 MB. The map holds each id in its own length."""
    ids = [f"user-{n:05d}" for n in range(5000)]
    plain = _peak_bytes(lambda: IdMap(ids))
    with_long = _peak_bytes(lambda: IdMap([*ids, "u" * 20_000]))
    assert with_long < plain + 1_000_000, (plain, with_long)
    idmap = IdMap([*ids, "u" * 20_000])
    assert idmap.index_of(["u" * 20_000, "user-00042"]).tolist() == [5000, 42]


def test_artifacts_written_with_fixed_width_ids_stay_readable(tmp_path):
    """Matrices, window and model files of earlier images stored ids as fixed-width unicode
    arrays: a rollback to such a model, or a run reusing such a window, still reads them."""
    import scipy.sparse as sp

    from trainer.data.interaction_cache import WindowInteractions
    from trainer.model.model_artifact import load_model
    from trainer.storage import artifacts

    users, items = np.array(["u1", "u2", "u3"]), np.array(["a", "bb"])
    train = sp.csr_matrix(np.array([[1, 0], [0, 2], [3, 4]], dtype=np.float32))
    buf = io.BytesIO()
    np.savez(buf, user_ids=users, item_ids=items, train_data=train.data, train_indices=train.indices,
             train_indptr=train.indptr, train_shape=np.array(train.shape))
    matrices = CFMatrices.from_bytes(buf.getvalue())
    assert matrices.users.ids.tolist() == ["u1", "u2", "u3"] and matrices.items.ids.tolist() == ["a", "bb"]

    buf = io.BytesIO()
    np.savez(buf, user_ids=users, item_ids=items, data=train.data, indices=train.indices,
             indptr=train.indptr, shape=np.array(train.shape))
    window = WindowInteractions.from_bytes(buf.getvalue())
    assert window.users.index_of(["u3"]).tolist() == [2]

    buf = io.BytesIO()
    np.savez(buf, user_ids=users, item_ids=items, user_factors=np.ones((3, 2), np.float32),
             item_factors=np.eye(2, dtype=np.float32), item_popularity=np.array([4, 6], np.float32))
    payload = buf.getvalue()
    store = artifacts.ArtifactStore(None)
    uri = str(tmp_path / "models" / "als-old")
    store.write_bytes(f"{uri}/model.npz", payload)
    params = {"factors": 2, "regularization": 0.01, "alpha": 1.0}
    store.write_json(f"{uri}/model.json", {"model_id": "als-old", "params": params, "metadata": {},
                                           "sha256": artifacts.sha256(payload), "bytes": len(payload)})
    model = load_model(store, uri)
    picks, _ = model.recommend(sp.csr_matrix(np.array([[1, 0]], dtype=np.float32)), 1, np.array(["u1"]))
    assert model.items.ids[picks[0]].tolist() == ["bb"]


# -- control characters and exact round trips ----------------------------------------------------

def test_ids_that_differ_by_a_trailing_nul_stay_two_ids():
    ids = IdMap(["abc", "abc\x00", "b"])
    assert len(ids) == 3 and ids.index_of(["abc\x00", "abc", "abc\x00\x00"]).tolist() == [1, 0, -1]
    encoded, codes = IdMap.encode(pa.array(["abc\x00", "abc", "abc\x00"]))
    assert len(encoded) == 2 and codes.tolist() == [1, 0, 1]


def test_ids_with_control_characters_are_counted_bad_rows(bq_client, project, dataset):
    day = RUN_DATE - dt.timedelta(days=2)
    load_events(bq_client, project, dataset, [
        _row("c1", "abc", "i1", "view", _at(day, 1)), _row("c2", "abc\x00", "i1", "view", _at(day, 2)),
        _row("c3", "u\t2", "i1", "view", _at(day, 3)), _row("c4", "u3", "i\x1b[31m", "view", _at(day, 4)),
        _row("c5", "u4", "i\x85", "view", _at(day, 5)), _row("c6", "ü-é 中", "i1", "view", _at(day, 6)),
    ])
    source = EventSource(bq_client, _events_table(project, dataset))
    report, rows = source.read_checked(split_window(RUN_DATE, 10, 0).full, WEIGHTS, 1.0)
    assert (report.control_character_in_id, report.valid_rows) == (4, 2)
    assert sorted(rows["user_id"].to_pylist()) == ["abc", "ü-é 中"]


# Ids as an app might send them: any printable text (no control characters, no surrogates), up
# to 300 characters, some differing from others only at the end.
_ID = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300)


@settings(max_examples=4, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(users=st.lists(_ID, min_size=3, max_size=6, unique=True),
       items=st.lists(_ID, min_size=6, max_size=8, unique=True))
def test_every_id_without_control_characters_round_trips_to_the_recommendations(
        users, items, step, bq_client, project, tmp_path):
    """emulator -> matrices -> model -> predict -> ``recommendations``: every user gets exactly
    their own id back and every recommended item is one of the given ids, byte for byte; a user
    whose id only adds a NUL is dropped and counted, not merged into the other."""
    dataset = f"t_{uuid.uuid4().hex[:10]}"
    step.common = ["--project", project, "--dataset", dataset]
    train_day, holdout_day = RUN_DATE - dt.timedelta(days=3), RUN_DATE
    rows = []
    for u, user in enumerate(users):
        for i, item in enumerate(items):
            if (u + i) % 3 == 0:  # a third of the items: every user has some left to recommend
                rows.append(_row(f"p{u}-{i}", user, item, "complete" if i % 2 else "view",
                                 _at(train_day, 1 + i)))
        rows.append(_row(f"h{u}", user, items[u % len(items)], "view", _at(holdout_day, 1)))
        rows.append(_row(f"n{u}", user + "\x00", items[0], "view", _at(train_day, 9)))
    load_events(bq_client, project, dataset, rows)
    art = tmp_path / uuid.uuid4().hex[:8]
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", str(art))
    rc, err = step("create_cf_matrices_task", *common, "--lookback-days", "5", "--holdout-days", "1",
                   "--max-bad-fraction", "0.5", "--anomaly-min-events", "1000000")
    assert rc == 0, err
    manifest = json.loads((art / "runs" / str(RUN_DATE) / "manifest.json").read_text())
    assert manifest["quality"]["control_character_in_id"] == len(users)
    rc, err = step("train_task", *common, "--factors", "2", "--iterations", "2", "--num-threads", "1")
    assert rc == 0, err
    model_uri = json.loads((art / "runs" / str(RUN_DATE) / "candidate.json").read_text())["model_uri"]
    rc, err = step("predict_task", *common, "--lookback-days", "5", "--model-uri", model_uri,
                   "--n-recommendations", "2", "--max-bad-fraction", "0.5")
    assert rc == 0, err
    recs = query(bq_client, f"SELECT user_id, item_id FROM `{project}.{dataset}.recommendations`")
    assert sorted({r["user_id"] for r in recs}) == sorted(users)
    assert {r["item_id"] for r in recs} <= set(items)
