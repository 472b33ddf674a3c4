"""Small BigQuery helpers shared by the steps: parameterised queries, Parquet load jobs."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from trainer.storage.clients import bigquery_read_client, bq_job_retry, bq_retry

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.bq")

# Exact types: bool is an int and datetime is a date, so isinstance() would pick wrongly.
_PARAM_TYPES: dict[type, str] = {
    bool: "BOOL", int: "INT64", float: "FLOAT64", str: "STRING",
    dt.datetime: "TIMESTAMP", dt.date: "DATE",
}


_TYPED = (bigquery.ScalarQueryParameter, bigquery.ArrayQueryParameter, bigquery.StructQueryParameter)


def _param(name: str, value: Any):
    if isinstance(value, _TYPED):  # typed by the caller (a NULL or an array needs it)
        return value
    bq_type = _PARAM_TYPES.get(type(value))
    if bq_type is None:
        raise TypeError(f"unsupported query parameter type for @{name}: {type(value).__name__}")
    return bigquery.ScalarQueryParameter(name, bq_type, value)


def job_config(params: Mapping[str, Any] | None = None, **kwargs: Any) -> bigquery.QueryJobConfig:
    return bigquery.QueryJobConfig(
        query_parameters=[_param(k, v) for k, v in (params or {}).items()], **kwargs
    )


def run(client: bigquery.Client, sql: str, params: Mapping[str, Any] | None = None):
    """Run a query or script and wait for it; returns the row iterator."""
    # No job_retry for the insert: with one, client.query also wraps jobs.insert in the library's
    # own 10-minute retry (retry._DEFAULT_QUERY_JOB_INSERT_RETRY) whatever our deadline, so a dead
    # endpoint held a step for 10 minutes. `retry` bounds the insert; result() re-runs failed jobs.
    job = client.query(sql, job_config=job_config(params), retry=bq_retry(), job_retry=None)
    return job.result(retry=bq_retry(), job_retry=bq_job_retry())


def to_arrow(client: bigquery.Client, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run a query and read its result through the Storage Read API (fast for large results)."""
    return run(client, sql, params).to_arrow(bqstorage_client=bigquery_read_client())


def load_table(client: bigquery.Client, table: pa.Table | Path, destination: str,
               schema: list[bigquery.SchemaField], truncate: bool) -> int:
    """Load ``table`` (an Arrow table, or a Parquet file too large to hold in memory) with a
    load job (Parquet, explicit schema); returns rows loaded."""
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=schema,
        write_disposition="WRITE_TRUNCATE" if truncate else "WRITE_APPEND",
    )
    with contextlib.ExitStack() as stack:
        if isinstance(table, Path):
            source = stack.enter_context(table.open("rb"))
        else:
            source = io.BytesIO()
            pq.write_table(table, source)
            source.seek(0)
        job = client.load_table_from_file(source, destination, job_config=config, rewind=True)
    job.result(retry=bq_retry())
    return int(job.output_rows or 0)
