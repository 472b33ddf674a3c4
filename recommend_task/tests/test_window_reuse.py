"""predict_task reuses the window create_cf_matrices_task read for the same run date only while
the events are unchanged, and publishes exactly what reading BigQuery again would (BigQuery and
Cloud Storage emulators, the steps' real entry points)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from test_sharding import PREDICT, _rows, _same
from trainer_support.helpers import RUN_DATE, query, run_training, seed

from trainer.data.date_windows import DateRange
from trainer.data.interaction_cache import describe, why_not_reuse
from trainer.model.idmap import IdMap
from trainer.model.model_artifact import load_model
from trainer.storage import artifacts

REUSED = "reusing the window create_cf_matrices read"


def _predict(step, art: str, *extra: str) -> str:
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art, *PREDICT, *extra)
    assert rc == 0, err
    return err


def _forget_window(project: str, art: str) -> None:
    """The run's manifest as one written before window files existed: predict must read BigQuery."""
    store = artifacts.ArtifactStore(project)
    uri = f"{art}/runs/{RUN_DATE}/manifest.json"
    manifest = store.read_json(uri)
    del manifest["window_interactions"]
    store.write_json(uri, manifest)


def test_reused_window_gives_the_rows_of_a_fresh_read_and_a_changed_window_is_read_again(
        step, bq_client, project, dataset, gcs_artifacts):
    seed(step)
    run_training(step, gcs_artifacts)

    log = _predict(step, gcs_artifacts)
    assert REUSED in log and "reading the window from BigQuery" not in log
    reused = _rows(bq_client, project, dataset)

    window_uri = f"{gcs_artifacts}/runs/{RUN_DATE}/window.npz"
    store = artifacts.ArtifactStore(project)
    store.write_bytes(window_uri, store.read_bytes(window_uri)[:-100])  # truncated: read again
    log = _predict(step, gcs_artifacts)
    assert f"reading the window from BigQuery: checksum mismatch for {window_uri}" in log
    assert _same(_rows(bq_client, project, dataset), reused)

    _forget_window(project, gcs_artifacts)
    log = _predict(step, gcs_artifacts)
    assert REUSED not in log and "reading the window from BigQuery: the run's matrices have no window" in log
    assert _same(_rows(bq_client, project, dataset), reused)

    # A late event for a user's top recommendation: a reused (stale) window would still
    # recommend that item; a fresh read filters it out as seen.
    run_training(step, gcs_artifacts)  # window file again, for the events as they are now
    assert REUSED in _predict(step, gcs_artifacts)
    (user, _, item, _), *_ = sorted(k for k in _rows(bq_client, project, dataset) if k[1] == 1)
    late = dt.datetime.combine(RUN_DATE, dt.time(12), tzinfo=dt.UTC)
    query(bq_client, f"""INSERT INTO `{project}.{dataset}.events`
        (event_id, user_id, item_id, event_type, event_timestamp, event_date)
        VALUES ('late-1', '{user}', '{item}', 'complete', TIMESTAMP '{late.isoformat()}',
                DATE '{RUN_DATE}')""")
    log = _predict(step, gcs_artifacts)
    assert "changed since create_cf_matrices read the window" in log  # one more row: quality and partitions
    assert REUSED not in log
    after = _rows(bq_client, project, dataset)
    assert not any(k[0] == user and k[2] == item for k in after)
    assert {k[0] for k in after} == {k[0] for k in reused}


def test_a_model_that_knows_other_items_never_reuses_the_window(step, bq_client, project, dataset,
                                                                 tmp_path):
    art = str(tmp_path / "artifacts")
    seed(step)
    run_training(step, art)
    store = artifacts.ArtifactStore(project)
    model = load_model(store, store.read_json(f"{art}/models/LATEST")["model_uri"])
    dropped = model.items.ids[-1]
    smaller = dataclasses.replace(model, model_id=model.model_id + "-smaller",
                                  items=IdMap(model.items.ids[:-1]),
                                  item_factors=model.item_factors[:-1],
                                  item_popularity=model.item_popularity[:-1])
    smaller.save(store, f"{art}/models/smaller")

    log = _predict(step, art, "--model-uri", f"{art}/models/smaller")
    assert REUSED not in log
    assert f"reading the window from BigQuery: model {smaller.model_id} was not trained on these items" in log
    rows = _rows(bq_client, project, dataset)
    assert rows and {k[3] for k in rows} == {smaller.model_id} and dropped not in {k[2] for k in rows}


def test_a_partition_modified_in_place_is_a_reason_to_read_again():
    """BigQuery's last_modified_time of a partition changes on an in-place UPDATE that keeps
    every count (the emulator has no such time, so this rule is checked without it)."""
    window = DateRange(dt.date(2026, 11, 1), dt.date(2026, 11, 2))
    weights, quality = {"view": 1.0}, {"rows_read": 10, "valid_rows": 10}
    before = [["20261101", 5, "2026-11-02T01:00:00+00:00"], ["20261102", 5, "2026-11-03T01:00:00+00:00"]]
    entry = describe("gs://b/runs/2026-11-02/window.npz", b"x", "p.d.events", window, weights, quality,
                     before)
    assert why_not_reuse(entry, "p.d.events", window, weights, quality, [list(p) for p in before]) is None
    updated = [before[0], ["20261102", 5, "2026-11-03T09:30:00+00:00"]]
    assert why_not_reuse(entry, "p.d.events", window, weights, quality, updated) == (
        "partitions changed since create_cf_matrices read the window")
    assert why_not_reuse(entry, "p.d.events", window, {"view": 2.0}, quality, before) == (
        "event weights changed since create_cf_matrices read the window")
    assert why_not_reuse(entry, "p.d.events", window, weights, quality, None) == (
        "the version of the window's partitions is unknown")
