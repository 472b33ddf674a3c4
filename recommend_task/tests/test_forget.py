"""A learner's right to be forgotten (forget_user_task) against the BigQuery and Cloud Storage
emulators: after a full day of training and sharded prediction that wrote the learner's id into
every place the product writes one, the step leaves it nowhere the product can read, and the
product keeps working for everyone else."""

from __future__ import annotations

import datetime as dt
import re

from trainer_support import id_scan
from trainer_support.helpers import RUN_DATE, TRAIN_ARGS, load_events, query, seed

LEARNER = "learner-forget-me-7f3a"
# The same shape as the seeded learners (u000..u599) but never seeded: a log naming a learner
# it should not would show one of these.
OTHER_IDS = re.compile(r"\bu\d{3}\b")


def _learner_events() -> list[dict]:
    """A few events a day over the window, then enough on the run date to be its top user and
    break the bot_user rule (more than 10 % of the day's events): the id also lands in
    event_stats, the anomaly lines and the refused step's status record."""
    rows = []
    for back in range(1, 18):
        day = RUN_DATE - dt.timedelta(days=back)
        for n in range(3):
            rows.append({"user_id": LEARNER, "item_id": f"i{(back + n) % 12:03d}", "event_type": "complete",
                         "event_timestamp": dt.datetime.combine(day, dt.time(10, n), dt.UTC),
                         "event_date": day})
    for n in range(220):
        rows.append({"user_id": LEARNER, "item_id": f"i{n % 40:03d}", "event_type": "view",
                     "event_timestamp": dt.datetime.combine(RUN_DATE, dt.time(n // 60, n % 60), dt.UTC),
                     "event_date": RUN_DATE})
    return rows


def _everywhere(bq_client, project: str, dataset: str, artifacts: str) -> list[str]:
    return (id_scan.tables_holding(bq_client, project, dataset, LEARNER)
            + id_scan.artifacts_holding(artifacts, project, LEARNER))


def test_a_forgotten_learner_is_nowhere_the_product_reads_and_everyone_else_is_still_served(
        step, bq_client, project, dataset, gcs_artifacts):
    seed(step)
    load_events(bq_client, project, dataset, _learner_events())
    common = ("--run-date", RUN_DATE.isoformat(), "--artifacts-uri", gcs_artifacts)
    rc, err = step("create_cf_matrices_task", *common, "--lookback-days", "20")
    assert rc == 2 and "bot_user" in err, err  # refused, the id in its error line
    for name, extra in (("create_cf_matrices_task", ("--lookback-days", "20", "--accept-anomalies", "true")),
                        ("train_task", TRAIN_ARGS[2:]), ("evaluate_task", ()), ("promote_model_task", ())):
        rc, err = step(name, *common, *extra)
        assert rc == 0, f"{name}: {err}"
    rc, err = step("predict_window_task", *common, "--lookback-days", "20", "--n-shards", "2")  # the DAG's
    assert rc == 0, err
    for shard in (0, 1):
        rc, err = step("predict_task", *common, "--lookback-days", "20", "--shard", str(shard),
                       "--n-shards", "2")
        assert rc == 0, err
    rc, err = step("publish_predictions_task", *common, "--n-shards", "2")
    assert rc == 0, err
    users = f"SELECT COUNT(DISTINCT user_id) AS n FROM `{project}.{dataset}.recommendations`"
    served = query(bq_client, users)
    before = _everywhere(bq_client, project, dataset, gcs_artifacts)
    # The scan sees the id wherever the product wrote it, so finding none afterwards means something.
    for place in ("events.user_id", "recommendations.user_id", "recommendations_latest.user_id",
                  "event_stats.top_user_id", "event_stats.anomalies", "/matrices.npz:user_ids_utf8.npy",
                  "/window.npz:user_ids_utf8.npy", "-of-2.npz:user_ids_utf8.npy",
                  "/model.npz:user_ids_utf8.npy", "/event_stats.json",
                  "/manifest.json"):
        assert any(found.endswith(place) for found in before), (place, before)
    assert any(found.startswith(f"_part_recommendations_{RUN_DATE:%Y%m%d}_") for found in before), before

    rc, err = step("forget_user_task", *common, "--user-id", LEARNER)
    assert rc == 0, err
    assert LEARNER not in err and not OTHER_IDS.search(err), err  # counts, never an id
    assert _everywhere(bq_client, project, dataset, gcs_artifacts) == []

    rc, again = step("forget_user_task", *common, "--user-id", LEARNER)  # a retry, or a second request
    assert rc == 0 and "nothing left to erase" in again, again

    # Everyone else: the published model still loads with its checksum and serves the day.
    rc, err = step("predict_task", *common, "--lookback-days", "20")
    assert rc == 0, err
    after = query(bq_client, users)
    assert after[0]["n"] == served[0]["n"] - 1
    from trainer.model.model_artifact import check_model, load_model
    from trainer.storage import artifacts, model_pointer

    store = artifacts.ArtifactStore(project)
    model_uri = model_pointer.published_model_uri(store, gcs_artifacts)
    check_model(store, model_uri)
    model = load_model(store, model_uri)
    assert len(model.users) == model.user_factors.shape[0] and model.users.index_of([LEARNER])[0] == -1
    rc, err = step("promote_model_task", *common, "--rollback-to", model.model_id)  # re-publishable
    assert rc == 0, err
    assert _everywhere(bq_client, project, dataset, gcs_artifacts) == []
