"""Table creation against the BigQuery emulator: a column added to a spec reaches a table
created before it (a deployed model_metrics gains the lineage columns on the next run)."""

from __future__ import annotations

import dataclasses

from google.cloud import bigquery

from trainer.storage import tables


def test_ensure_table_adds_the_columns_an_older_table_lacks_and_keeps_its_rows(bq_client, project, dataset):
    tables.ensure_dataset(bq_client, project, dataset, "US")
    spec = tables.MODEL_METRICS_SPEC
    lineage = [f.name for f in spec.schema].index("airflow_run_id")
    old = dataclasses.replace(spec, schema=spec.schema[:lineage])  # before the lineage (and tuning) columns
    tid = tables.ensure_table(bq_client, project, dataset, old)
    bq_client.query(f"""INSERT INTO `{tid}` (model_id, run_date, evaluated_at, model_uri, k, eval_users,
        primary_metric, verdict) VALUES ('als-old', '2026-11-01', CURRENT_TIMESTAMP(), 'gs://b/m', 10, 5,
        'recall', 'pass')""").result()
    assert "airflow_run_id" not in {f.name for f in bq_client.get_table(tid).schema}

    tables.ensure_table(bq_client, project, dataset, spec)
    fields = {f.name: f for f in bq_client.get_table(tid).schema}
    assert [f.name for f in spec.schema if f.name not in fields] == []
    assert fields["train_interactions"].field_type in ("INT64", "INTEGER")
    rows = list(bq_client.query(f"SELECT model_id, airflow_run_id FROM `{tid}`").result())
    assert [(r["model_id"], r["airflow_run_id"]) for r in rows] == [("als-old", None)]
    tables.ensure_table(bq_client, project, dataset, spec)  # a second run changes nothing
    assert len(bq_client.get_table(tid).schema) == len(spec.schema)


def test_the_latest_view_never_shows_a_future_day_and_an_older_view_is_redefined(
        bq_client, project, dataset, caplog):
    """A row dated after today (a run date the trainer refused only since issue 38) must not
    become what the web app reads; a dataset whose view was created by older code gets the new
    definition on the next run. The view's "today" is BigQuery's CURRENT_DATE(), the real date,
    so the days here are taken from the real date, two days clear of it on each side: a test
    that crosses midnight still sees the same days."""
    import datetime as dt

    real_today = dt.datetime.now(dt.UTC).date()
    past, future = real_today - dt.timedelta(days=2), real_today + dt.timedelta(days=19)
    tables.ensure_dataset(bq_client, project, dataset, "US")
    recs = tables.ensure_table(bq_client, project, dataset, tables.RECOMMENDATIONS_SPEC)
    view_id = tables.table_id(project, dataset, tables.RECOMMENDATIONS_LATEST)
    old = bigquery.Table(view_id)
    old.view_query = f"SELECT * FROM `{recs}` WHERE run_date = (SELECT MAX(run_date) FROM `{recs}`)"
    bq_client.create_table(old)  # what tables.ensure_latest_view created before
    for day, model in ((past, "m-past"), (future, "m-future")):
        bq_client.query(f"""INSERT INTO `{recs}` (run_date, user_id, rank, item_id, score, model_id,
            generated_at) VALUES ('{day}', 'u1', 1, 'i1', 1.0, '{model}', CURRENT_TIMESTAMP())""").result()

    def served() -> list[tuple]:
        return [(r["run_date"], r["model_id"]) for r in bq_client.query(
            f"SELECT run_date, model_id FROM `{view_id}`").result()]

    assert served() == [(future, "m-future")]  # the old definition serves the future day

    tables.ensure_all(bq_client, project, dataset, "US")
    assert served() == [(past, "m-past")]
    assert bq_client.get_table(view_id).description == tables.LATEST_VIEW_DESCRIPTION
    caplog.clear()
    tables.ensure_all(bq_client, project, dataset, "US")  # a second run leaves it as it is
    assert not [r for r in caplog.records if "redefining" in r.getMessage()]
    assert served() == [(past, "m-past")]
