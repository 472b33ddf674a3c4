"""Replace whole days of a partitioned table atomically: stage, (validate), swap, clean up.

BigQuery's partition decorators (``table$20261129``) would be the natural tool, but the
local emulator does not support them; DELETE + INSERT inside one multi-statement transaction
gives the same guarantee on both: readers see the old day or the new day, never a mix, and a
failure rolls back to the old day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from trainer.storage import bq
from trainer.storage.clients import bq_retry

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.partitions")

STAGING_TTL = dt.timedelta(days=1)


@contextlib.contextmanager
def staging_table(client: bigquery.Client, target: str, rows: pa.Table | Path,
                  schema: list[bigquery.SchemaField]) -> Iterator[str]:
    """Load ``rows`` (a table or a Parquet file) into a uniquely named staging table next to
    ``target``; drop it afterwards."""
    project, dataset, name = target.split(".")
    staging = f"{project}.{dataset}._staging_{name}_{uuid.uuid4().hex[:12]}"
    # Created empty with an expiration before any row is loaded: a step killed at any point
    # after this (no `finally` runs on SIGKILL) leaves a table that BigQuery deletes by itself.
    table = bigquery.Table(staging, schema=schema)
    table.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
    client.create_table(table, retry=bq_retry())
    try:
        loaded = bq.load_table(client, rows, staging, schema, truncate=True)
        log.info("staged %d rows in %s", loaded, staging)
        yield staging
    finally:
        client.delete_table(staging, not_found_ok=True, retry=bq_retry())


def write_part_table(client: bigquery.Client, part: str, rows: pa.Table,
                     schema: list[bigquery.SchemaField]) -> int:
    """Replace the table ``part`` with ``rows``: dropped, created with an expiration (so a
    part never outlives :data:`STAGING_TTL`, published or not), then loaded. Returns rows."""
    client.delete_table(part, not_found_ok=True, retry=bq_retry())
    table = bigquery.Table(part, schema=schema)
    table.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
    client.create_table(table, retry=bq_retry())
    loaded = bq.load_table(client, rows, part, schema, truncate=True)
    log.info("staged %d rows in %s (expires in %s)", loaded, part, STAGING_TTL)
    return loaded


def union_of(tables: str | Sequence[str]) -> str:
    """A FROM-able expression holding every row of ``tables``."""
    names = [tables] if isinstance(tables, str) else list(tables)
    if len(names) == 1:
        return f"`{names[0]}`"
    return "(" + " UNION ALL ".join(f"SELECT * FROM `{name}`" for name in names) + ")"


def replace_rows(client: bigquery.Client, target: str, staging: str | Sequence[str], where: str,
                 params: Mapping[str, Any]) -> None:
    """In one transaction, delete the rows of ``target`` matching ``where`` and insert all of
    ``staging`` (one table, or the union of several): readers see the old rows or the new
    ones, never both or neither."""
    _replace(client, target, where, f"SELECT * FROM {union_of(staging)}", params)


def _replace(client: bigquery.Client, target: str, where: str, insert: str,
             params: Mapping[str, Any]) -> None:
    """One transaction: delete ``target``'s rows matching ``where``, then ``INSERT ... insert``."""
    sql = f"""
        BEGIN TRANSACTION;
        DELETE FROM `{target}` WHERE {where};
        INSERT INTO `{target}` {insert};
        COMMIT TRANSACTION;
    """
    bq.run(client, sql, params)


def replace_with_row(client: bigquery.Client, target: str, schema: Sequence[bigquery.SchemaField],
                     row: Mapping[str, Any], where: str) -> None:
    """In one transaction, delete the rows of ``target`` matching ``where`` and insert ``row``
    (every field of ``schema``; ``where`` names them as ``@field``). For one row, one DML script
    where :func:`staging_table` and :func:`replace_rows` take a table, a load job and a script."""
    params = {f.name: bigquery.ScalarQueryParameter(f.name, f.field_type, row.get(f.name))
              for f in schema}
    _replace(client, target, where,
             f"({', '.join(params)}) VALUES ({', '.join(f'@{n}' for n in params)})", params)


def replace_with_rows(client: bigquery.Client, target: str, schema: Sequence[bigquery.SchemaField],
                      rows: Sequence[Mapping[str, Any]], where: str,
                      params: Mapping[str, Any]) -> None:
    """:func:`replace_with_row` for a few rows (a run's trials): one DML script inserting from
    an array-of-structs parameter, no load job."""
    names = [f.name for f in schema]
    struct = bigquery.SchemaField("rows", "RECORD", mode="REPEATED", fields=list(schema))
    _replace(client, target, where,
             f"({', '.join(names)}) SELECT {', '.join(f'r.{n}' for n in names)} FROM UNNEST(@rows) AS r",
             {**params, "rows": query_parameter(struct, list(rows))})


def query_parameter(field: bigquery.SchemaField, value: Any, name: str | None = None):
    """A query parameter holding ``value`` as ``field`` types it: a scalar, an array, or an array
    of structs (an empty one keeps its struct type)."""
    name = field.name if name is None else name
    if field.mode != "REPEATED":
        return bigquery.ScalarQueryParameter(name, field.field_type, value)
    values = list(value or ())
    if field.field_type not in ("RECORD", "STRUCT"):
        return bigquery.ArrayQueryParameter(name, field.field_type, values)
    struct_type = bigquery.StructQueryParameterType(
        *(bigquery.ScalarQueryParameterType(f.field_type, name=f.name) for f in field.fields))
    structs = [bigquery.StructQueryParameter(
        None, *(bigquery.ScalarQueryParameter(f.name, f.field_type, item.get(f.name)) for f in field.fields))
        for item in values]
    return bigquery.ArrayQueryParameter(name, struct_type, structs)


def upsert_row(client: bigquery.Client, target: str, schema: Sequence[bigquery.SchemaField],
               row: Mapping[str, Any], key: Sequence[str]) -> None:
    """Insert ``row`` into ``target``, or replace the row with the same ``key`` fields, in one
    MERGE statement. Unlike :func:`replace_with_row`'s transaction, concurrent upserts of other
    keys in other partitions do not conflict on BigQuery (backfill runs write their days at once),
    so the writers need no pool."""
    names = [f.name for f in schema]
    params = {n: query_parameter(f, row.get(n)) for n, f in zip(names, schema, strict=True)}
    source = ", ".join(f"@{n} AS {n}" for n in names)
    on = " AND ".join(f"T.{k} = S.{k}" for k in key)
    sql = f"""
        MERGE `{target}` T USING (SELECT {source}) S ON {on}
        WHEN MATCHED THEN UPDATE SET {", ".join(f"{n} = S.{n}" for n in names if n not in key)}
        WHEN NOT MATCHED THEN INSERT ({", ".join(names)}) VALUES ({", ".join(f"S.{n}" for n in names)})
    """
    bq.run(client, sql, params)


def swap_days(client: bigquery.Client, target: str, staging: str | Sequence[str], date_field: str,
              start: dt.date, end: dt.date) -> None:
    """Replace the days ``start..end`` of ``target`` with the content of ``staging``."""
    replace_rows(client, target, staging, f"{date_field} BETWEEN @start AND @end",
                 {"start": start, "end": end})
