"""Shared test helpers: seeding and reading back from the BigQuery emulator."""

from __future__ import annotations

import datetime as dt
import uuid

RUN_DATE = dt.date(2026, 11, 29)
# Small enough to be quick, big enough that planted clusters are learnable.
SEED_ARGS = ("--users", "600", "--items", "120", "--events", "24000", "--days", "20",
             "--clusters", "6")
TRAIN_ARGS = ("--lookback-days", "20", "--factors", "16", "--iterations", "8", "--num-threads", "1")


def seed(step, end_date: dt.date = RUN_DATE, *extra: str) -> None:
    rc, err = step("seed_events", "--end-date", end_date.isoformat(), *SEED_ARGS, *extra)
    assert rc == 0, err


def query(client, sql: str) -> list[dict]:
    return [dict(row.items()) for row in client.query(sql).result()]


def recommendation_counts(client, project: str, dataset: str) -> dict[dt.date, tuple[int, int, int]]:
    """run_date -> (rows, distinct users, distinct (user, rank) pairs)."""
    rows = query(client, f"""
        SELECT run_date, COUNT(*) AS n, COUNT(DISTINCT user_id) AS users,
               COUNT(DISTINCT CONCAT(user_id, '#', CAST(rank AS STRING))) AS slots
        FROM `{project}.{dataset}.recommendations` GROUP BY run_date""")
    return {r["run_date"]: (r["n"], r["users"], r["slots"]) for r in rows}


def run_training(step, artifacts: str, run_date: dt.date = RUN_DATE, *evaluate_extra: str) -> None:
    """matrices -> train -> evaluate -> promote for ``run_date``; asserts each step succeeds."""
    common = ("--run-date", run_date.isoformat(), "--artifacts-uri", artifacts)
    for name, extra in (("create_cf_matrices_task", ("--lookback-days", "20")),
                        ("train_task", TRAIN_ARGS[2:]),
                        ("evaluate_task", evaluate_extra),
                        ("promote_model_task", ())):
        rc, err = step(name, *common, *extra)
        assert rc == 0, f"{name}: {err}"



def load_events(client, project: str, dataset: str, rows: list[dict]) -> None:
    """Append hand-made rows to ``events`` (its columns; a missing one is NULL)."""
    import pyarrow as pa

    from trainer.storage import bq, tables

    tables.ensure_all(client, project, dataset, "US")
    arrow = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                       ("event_type", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
                       pa.field("event_date", pa.date32(), nullable=False)])
    batch = uuid.uuid4().hex[:8]  # ids unique across calls: two loads never duplicate an event
    full = [{"event_id": f"hand-{batch}-{i}", **row} for i, row in enumerate(rows)]
    bq.load_table(client, pa.Table.from_pylist(full, schema=arrow),
                  tables.table_id(project, dataset, tables.EVENTS), list(tables.EVENTS_SPEC.schema),
                  truncate=False)
