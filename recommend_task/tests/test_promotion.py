"""Monotonic promotion and explicit rollback, against fake-gcs-server (the generation
precondition of the pointer swap is the real GCS one) and the BigQuery emulator."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

from trainer_support.helpers import RUN_DATE, TRAIN_ARGS, query, seed

from trainer.storage import artifacts, retention
from trainer.storage.clients import storage_client

NEWER, OLDER = RUN_DATE, RUN_DATE - dt.timedelta(days=3)


def _candidate(step, art: str, run_date: dt.date, *evaluate_extra: str) -> str:
    """matrices -> train -> evaluate for ``run_date``, no promotion; returns the model id."""
    common = ("--run-date", run_date.isoformat(), "--artifacts-uri", art)
    for name, extra in (("create_cf_matrices_task", ("--lookback-days", "20")),
                        ("train_task", TRAIN_ARGS[2:]), ("evaluate_task", evaluate_extra)):
        rc, err = step(name, *common, *extra)
        assert rc == 0, f"{name}: {err}"
    return _read(step.store, f"{art}/runs/{run_date}/candidate.json")["model_id"]


def _read(store, uri: str) -> dict:
    return json.loads(store.read_bytes(uri))


def _custom_times(project: str, art: str) -> dict[str, list]:
    """model id -> the customTime of each of its objects (None: not marked)."""
    bucket, _, prefix = art.removeprefix("gs://").partition("/")
    times: dict[str, list] = {}
    for blob in storage_client(project).list_blobs(bucket, prefix=f"{prefix}/models/als-"):
        times.setdefault(blob.name.split("/")[-2], []).append(blob.custom_time)
    return times


def _promote(step, art: str, run_date: dt.date, *extra: str) -> tuple[int, str]:
    return step("promote_model_task", "--run-date", run_date.isoformat(), "--artifacts-uri", art, *extra)


def test_a_backfilled_older_model_is_recorded_not_published_and_a_rollback_publishes_it(
        step, bq_client, project, dataset, gcs_artifacts):
    step.store = artifacts.ArtifactStore(project)
    seed(step)
    newer = _candidate(step, gcs_artifacts, NEWER)
    rc, err = _promote(step, gcs_artifacts, NEWER)
    assert rc == 0, err
    older = _candidate(step, gcs_artifacts, OLDER)  # the backfill, after today's model is out

    rc, err = _promote(step, gcs_artifacts, OLDER, "--keep-models", "1")
    assert rc == 0, err  # a backfill stays green
    assert "older than the published model" in err
    # Retention: with one model kept besides the published one, the older model is marked for
    # the bucket's lifecycle rule (customTime on each of its objects), the published one is not.
    marked = _custom_times(project, gcs_artifacts)
    assert set(marked) == {newer, older} and set(marked[newer]) == {None}, marked
    assert len(marked[older]) >= 2 and None not in marked[older], marked
    assert _read(step.store, f"{gcs_artifacts}/models/LATEST")["model_id"] == newer
    promotion = _read(step.store, f"{gcs_artifacts}/runs/{OLDER}/promotion.json")
    assert (promotion["model_id"], promotion["published"]) == (older, False)
    rows = query(bq_client, f"SELECT * FROM `{project}.{dataset}.model_metrics`")
    metrics = {r["run_date"]: r for r in rows}
    assert set(metrics) == {NEWER, OLDER} and metrics[OLDER]["verdict"] == "pass"
    assert metrics[OLDER]["published_model_id"] is None  # not judged against a model trained on its holdout
    # Lineage columns, from the run's manifest (the Recommender page's model table).
    manifest = _read(step.store, f"{gcs_artifacts}/runs/{OLDER}/manifest.json")
    assert (metrics[OLDER]["window_start"].isoformat(), metrics[OLDER]["train_end"].isoformat(),
            metrics[OLDER]["train_users"], metrics[OLDER]["train_interactions"],
            metrics[OLDER]["events_rows_read"]) == (
        manifest["window"]["start"], manifest["window"]["train_end"], manifest["counts"]["users"],
        manifest["counts"]["train_nnz"], manifest["quality"]["rows_read"])

    rc, err = _promote(step, gcs_artifacts, NEWER, "--rollback-to", older, "--keep-models", "1")
    assert rc == 0, err
    pointer = _read(step.store, f"{gcs_artifacts}/models/LATEST")
    assert (pointer["model_id"], pointer["previous_model_id"], pointer["rollback"]) == (older, newer, True)
    # The history: one row per change of the pointer, none for the backfill that was not published,
    # and a repeated rollback (already published) writes the same row again, not a second one.
    assert _promote(step, gcs_artifacts, NEWER, "--rollback-to", older)[0] == 0
    history = query(bq_client, f"SELECT model_id, previous_model_id, is_rollback, published_at "
                               f"FROM `{project}.{dataset}.publications` ORDER BY published_at")
    assert [(h["model_id"], h["previous_model_id"], h["is_rollback"]) for h in history] == [
        (newer, None, False), (older, newer, True)], history
    assert history[1]["published_at"].isoformat() == pointer["promoted_at"]
    # Published again, it is out of the lifecycle rule's reach for good (customTime only moves
    # forward); the newer model is the newest, so it stays unmarked.
    marked = _custom_times(project, gcs_artifacts)
    assert set(marked[older]) == {retention.KEEP_FOREVER} and set(marked[newer]) == {None}, marked
    rc, err = step("predict_task", "--run-date", str(NEWER), "--artifacts-uri", gcs_artifacts,
                   "--lookback-days", "20")
    assert rc == 0, err
    assert _read(step.store, f"{gcs_artifacts}/runs/{NEWER}/predictions.json")["model_id"] == older


def test_a_rollback_to_a_model_that_failed_evaluation_is_refused(step, project, gcs_artifacts):
    step.store = artifacts.ArtifactStore(project)
    seed(step)
    good = _candidate(step, gcs_artifacts, NEWER)
    assert _promote(step, gcs_artifacts, NEWER)[0] == 0
    failed = _candidate(step, gcs_artifacts, OLDER, "--min-lift", "100")  # an impossible gate
    rc, err = _promote(step, gcs_artifacts, NEWER, "--rollback-to", failed)
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith(
        f"ERROR: promote_model_task: model {failed} failed evaluation, not promoting")
    assert _read(step.store, f"{gcs_artifacts}/models/LATEST")["model_id"] == good


def test_concurrent_promotions_end_with_the_newest_model_whatever_the_order(
        step, project, dataset, gcs_artifacts, emulators):
    """Both promotions start together as processes, in both orders of launch: the generation
    precondition lets one swap win, the loser re-reads the pointer and applies the rule again."""
    step.store = artifacts.ArtifactStore(project)
    seed(step)
    models = {day: _candidate(step, gcs_artifacts, day) for day in (OLDER, NEWER)}
    latest = f"{gcs_artifacts}/models/LATEST"
    for order in ((OLDER, NEWER), (NEWER, OLDER)):
        if step.store.exists(latest):  # start each order with nothing published
            bucket, _, name = latest.removeprefix("gs://").partition("/")
            storage_client(project).bucket(bucket).blob(name).delete()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "trainer.promote_model_task", "--project", project, "--dataset", dataset,
             "--run-date", day.isoformat(), "--artifacts-uri", gcs_artifacts],
            env=emulators["env"], stderr=subprocess.PIPE, text=True) for day in order]
        outputs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert _read(step.store, latest)["model_id"] == models[NEWER], (order, outputs)


def test_a_damaged_model_file_is_refused_from_the_checksum_cloud_storage_keeps(step, project, gcs_artifacts):
    """Promotion checks model.npz without downloading it: the object's MD5 as fake-gcs-server
    (like GCS) computed it on upload, against the one model.json recorded."""
    step.store = artifacts.ArtifactStore(project)
    seed(step)
    model_id = _candidate(step, gcs_artifacts, NEWER)
    uri = f"{gcs_artifacts}/models/{model_id}"
    meta = _read(step.store, f"{uri}/model.json")
    # A wrong SHA-256 still matches: the storage checksum decided, not a download.
    assert step.store.matches(f"{uri}/model.npz", "0" * 64, meta["md5"])

    payload = step.store.read_bytes(f"{uri}/model.npz")
    step.store.write_bytes(f"{uri}/model.npz", payload[:-1000])  # truncated
    assert not step.store.matches(f"{uri}/model.npz", meta["sha256"], meta["md5"])
    rc, err = _promote(step, gcs_artifacts, NEWER)
    assert rc != 0
    assert err.strip().splitlines()[-1] == (
        f"ERROR: promote_model_task: checksum mismatch for {uri}/model.npz: file does not match model.json")
    assert not step.store.exists(f"{gcs_artifacts}/models/LATEST")
