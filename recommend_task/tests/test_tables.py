"""Table creation against the BigQuery emulator: a column added to a spec reaches a table
created before it (a deployed model_metrics gains the lineage columns on the next run)."""

from __future__ import annotations

import dataclasses

from trainer import tables


def test_ensure_table_adds_the_columns_an_older_table_lacks_and_keeps_its_rows(bq_client, project, dataset):
    tables.ensure_dataset(bq_client, project, dataset, "US")
    spec = tables.MODEL_METRICS_SPEC
    old = dataclasses.replace(spec, schema=spec.schema[:-8])  # before the lineage columns
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
