"""Sharded prediction (predict_task --shard I --n-shards N, then publish_predictions_task)
against the BigQuery and Cloud Storage emulators: the shards partition the users, publishing
is all or nothing, and every step can be re-run."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from trainer_support.helpers import RUN_DATE, query, recommendation_counts, run_training, seed

from trainer.data.shards import Shard, shard_of_user
from trainer.storage import artifacts

PREDICT = ("--lookback-days", "20", "--n-recommendations", "5")


def _rows(client, project: str, dataset: str) -> dict[tuple, float]:
    """The day's recommendations without generated_at (each process stamps its own):
    (user, rank, item, model) -> score."""
    return {(r["user_id"], r["rank"], r["item_id"], r["model_id"]): r["score"]
            for r in query(client, f"""SELECT user_id, rank, item_id, score, model_id
                FROM `{project}.{dataset}.recommendations` WHERE run_date = '{RUN_DATE}'""")}


def _same(rows: dict[tuple, float], expected: dict[tuple, float]) -> bool:
    """Same users, ranks, items and model; scores equal to float32 precision (implicit's
    batched user solve rounds differently in a batch of other users)."""
    return rows.keys() == expected.keys() and all(
        math.isclose(rows[k], expected[k], rel_tol=1e-5, abs_tol=1e-6) for k in rows)


def _sharded(step, art: str, n: int, shards: range | None = None) -> None:
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", art, *PREDICT)
    for i in shards if shards is not None else range(n):
        rc, err = step("predict_task", *common, "--shard", str(i), "--n-shards", str(n))
        assert rc == 0, err


def _publish(step, art: str, n: int) -> tuple[int, str]:
    return step("publish_predictions_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art,
                "--n-shards", str(n), "--n-recommendations", "5")


@pytest.fixture
def trained(step, tmp_path) -> str:
    art = str(tmp_path / "artifacts")
    seed(step)
    run_training(step, art)
    return art


def test_three_shards_publish_exactly_the_rows_of_one_process(step, bq_client, project, dataset, trained,
                                                              caplog):
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", trained, *PREDICT)
    assert rc == 0, err
    unsharded = _rows(bq_client, project, dataset)

    _sharded(step, trained, 3)
    parts = [artifacts.ArtifactStore(project).read_json(Shard(i, 3).record_uri(trained, RUN_DATE))
             for i in range(3)]
    assert all(p["users"] > 0 for p in parts) and sum(p["users"] for p in parts) == len(
        {key[0] for key in unsharded})
    for part in parts:  # BigQuery put each user where the documented hash says
        users = [r["user_id"] for r in query(bq_client, f"SELECT DISTINCT user_id FROM `{part['table']}`")]
        assert len(users) == part["users"] and {shard_of_user(u, 3) for u in users} == {part["shard"]}
    assert _rows(bq_client, project, dataset) == unsharded  # staged, not published yet
    caplog.clear()
    rc, err = _publish(step, trained, 3)
    assert rc == 0, err
    assert _same(_rows(bq_client, project, dataset), unsharded)
    assert {r["n"] for r in query(bq_client, f"""SELECT COUNT(DISTINCT generated_at) AS n
        FROM `{project}.{dataset}.recommendations`""")} == {3}  # really the shards' rows
    summary = artifacts.ArtifactStore(project).read_json(f"{trained}/runs/{RUN_DATE}/predictions.json")
    assert summary["n_shards"] == 3 and summary["rows_written"] == len(unsharded)
    assert [s["shard"] for s in summary["shards"]] == [0, 1, 2]


def test_a_missing_shard_publishes_nothing_and_a_rerun_shard_is_idempotent(
        step, bq_client, project, dataset, trained):
    _sharded(step, trained, 1)
    assert _publish(step, trained, 1)[0] == 0
    before = recommendation_counts(bq_client, project, dataset)

    _sharded(step, trained, 3, shards=range(0, 3, 2))  # shard 1 failed / never ran
    rc, err = _publish(step, trained, 3)
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"ERROR: publish_predictions_task: no staged part for shard(s) 1 of 3 for {RUN_DATE}: run "
        "their predict_task --shard first; nothing published")
    assert recommendation_counts(bq_client, project, dataset) == before

    _sharded(step, trained, 3, shards=range(1, 2))
    _sharded(step, trained, 3, shards=range(1, 2))  # the same shard again: replaces its part
    assert _publish(step, trained, 3)[0] == 0
    assert _publish(step, trained, 3)[0] == 0  # and publishing again replaces the day
    assert recommendation_counts(bq_client, project, dataset) == before
    parts = query(bq_client, f"""SELECT table_name FROM `{project}.{dataset}.INFORMATION_SCHEMA.TABLES`
                                 WHERE table_name LIKE '_part_%'""")
    assert sorted(p["table_name"] for p in parts) == [
        f"_part_recommendations_{RUN_DATE:%Y%m%d}_{i}_of_{n}" for i, n in ((0, 1), (0, 3), (1, 3), (2, 3))]
    table = bq_client.get_table(f"{project}.{dataset}._part_recommendations_{RUN_DATE:%Y%m%d}_1_of_3")
    assert table.expires is not None and table.expires < dt.datetime.now(dt.UTC) + dt.timedelta(days=2)


def test_parts_that_fail_validation_together_publish_nothing(step, bq_client, project, dataset, trained):
    _sharded(step, trained, 2)
    assert _publish(step, trained, 2)[0] == 0
    before = recommendation_counts(bq_client, project, dataset)
    # Shard 1's part now holds shard 0's users too: every user must be in exactly one part.
    part0, part1 = (f"{project}.{dataset}._part_recommendations_{RUN_DATE:%Y%m%d}_{i}_of_2" for i in (0, 1))
    query(bq_client, f"INSERT INTO `{part1}` SELECT * FROM `{part0}`")
    rc, err = _publish(step, trained, 2)
    assert rc == 2 and "staged recommendations for 2026-11-29 rejected, nothing published" in err, err
    assert "rows staged, expected" in err
    assert recommendation_counts(bq_client, project, dataset) == before


@pytest.mark.parametrize(("argv", "message"), [
    (("--shard", "3", "--n-shards", "3"), "--shard must be in [0, 2] for --n-shards 3, got 3"),
    (("--shard", "0"), "--shard and --n-shards go together"),
    (("--shard", "0", "--n-shards", "0"), "--n-shards must be in [1, 256], got 0"),
])
def test_bad_shard_arguments_fail_before_anything_is_read(step, tmp_path, argv, message):
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", str(tmp_path), *argv)
    assert rc == 2 and err.strip().splitlines()[-1] == f"ERROR: predict_task: {message}"


def _event_scans(project: str, art: str, name: str) -> int:
    """Window scans of the events table the last run of step ``name`` made (its status record)."""
    record = artifacts.ArtifactStore(project).read_json(f"{art}/runs/{RUN_DATE}/status/{name}.json")
    return int(record["profile"]["counts"].get("event_scans", 0))


def test_predict_reads_the_window_once_whatever_the_number_of_shards(
        step, bq_client, project, dataset, trained):
    """BigQuery bills a query by the columns of the partitions it reads, whatever rows its WHERE
    keeps: a shard that filters the window by its users' hash is billed the whole window. So the
    window is read once per run (predict_window_task: quality counts, then the aggregation or
    create_cf_matrices' saved window) and each shard loads it and keeps its users: the scans,
    and the bytes a real BigQuery would bill for them, are the same for 1 and 4 shards, and a
    shard scans nothing. A window that changed after it was prepared is read by the shard itself."""
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", trained)
    scans, published = {}, {}
    for n in (1, 4):
        rc, err = step("predict_window_task", *common, "--lookback-days", "20", "--n-shards", str(n))
        assert rc == 0, err
        per_shard = []
        for i in range(n):
            rc, err = step("predict_task", *common, *PREDICT, "--shard", str(i), "--n-shards", str(n))
            assert rc == 0 and "using the window prepared for" in err, err
            per_shard.append(_event_scans(project, trained, "predict_task"))
        assert per_shard == [0] * n
        scans[n] = _event_scans(project, trained, "predict_window_task")
        assert _publish(step, trained, n)[0] == 0
        published[n] = _rows(bq_client, project, dataset)
    assert scans[1] == scans[4] >= 1
    assert _same(published[4], published[1])
    store = artifacts.ArtifactStore(project)

    def read_from(i: int, n: int) -> dict:  # what each part record says its rows came from
        record = store.read_json(f"{trained}/runs/{RUN_DATE}/predict-parts/{i}-of-{n}.json")
        return {k: record[k] for k in ("prepared", "window_cache")}

    assert [read_from(i, 4) for i in range(4)] == [{"prepared": True, "window_cache": None}] * 4

    # An event arrives for a new user after the window was prepared: the shard reads by itself.
    from trainer_support.helpers import load_events

    load_events(bq_client, project, dataset, [{
        "user_id": "late-user", "item_id": next(iter(published[1]))[2], "event_type": "view",
        "event_timestamp": dt.datetime(RUN_DATE.year, RUN_DATE.month, RUN_DATE.day, 12, tzinfo=dt.UTC),
        "event_date": RUN_DATE}])
    for i in range(2):
        rc, err = step("predict_task", *common, *PREDICT, "--shard", str(i), "--n-shards", "2")
        assert rc == 0 and "the window's partitions changed since" in err, err
    assert _publish(step, trained, 2)[0] == 0
    assert [read_from(i, 2)["prepared"] for i in range(2)] == [False, False]
    assert "late-user" in {key[0] for key in _rows(bq_client, project, dataset)}


def test_a_model_that_does_not_load_leaves_the_error_to_predict(step, project, trained):
    """predict_window only prepares a cache over the model's items: a damaged published model
    prepares nothing (a warning), and predict_task fails on it with the model's own error."""
    from trainer.storage import model_pointer

    store = artifacts.ArtifactStore(project)
    model_file = f"{model_pointer.published_model_uri(store, trained)}/model.npz"
    store.write_bytes(model_file, b"damaged")
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", trained)
    rc, err = step("predict_window_task", *common, "--lookback-days", "20")
    assert rc == 0 and "no window prepared, the model does not load" in err, err
    rc, err = step("predict_task", *common, *PREDICT, "--shard", "0", "--n-shards", "1")
    assert rc == 2 and "checksum" in err.strip().splitlines()[-1], err
