"""The floor a pipeline run is measured against: the same work done bare, in one process.

* data floor: the aggregation query the pipeline runs over the window (the trainer's own SQL,
  ``EventSource.interactions_query``), one Arrow read of its result through the same BigQuery
  emulator (Storage Read API), and one Parquet load of a table the size of the recommendations;
* compute floor: the CSR of the training days (the window without its 2 holdout days: the
  matrix train_task fits), plain ``implicit`` ALS fit with the pipeline's parameters (BLAS at 1
  thread, all cores for implicit), and one batched ``recommend`` of top-N unseen items for every
  user of that matrix with the fitted factors.

Prints one JSON object (seconds per part, sizes, peak RSS). Run by tests/dags/bench_airflow.py
with the emulator variables set:

    python benchmarks/floor.py --project P --dataset D --run-date 2026-11-29 --lookback-days 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import scipy.sparse as sp
from google.cloud import bigquery
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from trainer.data.date_windows import split_window
from trainer.data.events import DEFAULT_EVENT_WEIGHTS, EventSource
from trainer.storage import bq
from trainer.storage.clients import bigquery_client, bigquery_read_client

HOLDOUT_DAYS = 2  # create_cf_matrices_task's default


def billed_bytes(client, table: str, window) -> dict[str, int]:
    """What a real BigQuery would bill for the window's read with and without ``event_id``: the
    emulator reports 0 bytes, so they are computed from the columns and partitions read, with
    BigQuery's documented sizes (STRING 2 bytes + its UTF-8 length, TIMESTAMP and DATE 8 bytes,
    NULL 0), as on-demand pricing counts them (every row of each partition read)."""
    def string(column: str) -> str:
        return f"IFNULL(2 + BYTE_LENGTH({column}), 0)"

    sql = f"""
        SELECT SUM({string('user_id')} + {string('item_id')} + {string('event_type')}
                   + IF(event_timestamp IS NULL, 0, 8) + 8) AS without_event_id,
               SUM({string('event_id')}) AS event_id
        FROM `{table}` WHERE event_date BETWEEN @start AND @end"""
    row = next(iter(bq.run(client, sql, {"start": window.start, "end": window.end})))
    without, extra = int(row["without_event_id"] or 0), int(row["event_id"] or 0)
    return {"billed_bytes_without": without, "billed_bytes_extra": extra,
            "billed_extra_fraction": round(extra / without, 4) if without else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--lookback-days", type=int, default=30)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--regularization", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    client = bigquery_client(args.project)
    seconds: dict[str, float] = {}

    window = split_window(args.run_date, args.lookback_days, HOLDOUT_DAYS)
    source = EventSource(client, f"{args.project}.{args.dataset}.events")
    # The floor keeps the aggregation without de-duplication; the cost of counting each event
    # once (the trainer's query) is timed beside it and printed apart.
    sql, params = source.interactions_query(window.full, DEFAULT_EVENT_WEIGHTS, window.holdout.start,
                                            deduplicate=False)
    t = time.perf_counter()
    table = bq.run(client, sql, params).to_arrow(bqstorage_client=bigquery_read_client())
    seconds["query_and_read"] = time.perf_counter() - t
    dedup_sql, _ = source.interactions_query(window.full, DEFAULT_EVENT_WEIGHTS, window.holdout.start)
    t = time.perf_counter()
    deduplicated = bq.run(client, dedup_sql, params).to_arrow(bqstorage_client=bigquery_read_client())
    dedup_seconds = time.perf_counter() - t
    if deduplicated.num_rows != table.num_rows:
        raise SystemExit("the de-duplicated aggregation differs on events without copies")
    del deduplicated
    billed = billed_bytes(client, source.table, window.full)

    t = time.perf_counter()
    table = table.filter(pa.compute.invert(table["in_holdout"]))
    # Dictionary encoding (Arrow's C++ hash table) is the cheap way from ids to dense indexes.
    user_codes = pa.compute.dictionary_encode(table["user_id"]).combine_chunks()
    item_codes = pa.compute.dictionary_encode(table["item_id"]).combine_chunks()
    users = user_codes.dictionary.to_numpy(zero_copy_only=False)
    items = item_codes.dictionary.to_numpy(zero_copy_only=False)
    user_idx, item_idx = user_codes.indices.to_numpy(), item_codes.indices.to_numpy()
    weights = table["weight"].to_numpy().astype(np.float32)
    matrix = sp.csr_matrix((weights, (user_idx, item_idx)), shape=(len(users), len(items)))
    seconds["csr"] = time.perf_counter() - t

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=args.factors, regularization=args.regularization,
                                        alpha=args.alpha, iterations=args.iterations, random_state=42)
        t = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        ids, scores = model.recommend(np.arange(len(users)), matrix, N=args.n,
                                      filter_already_liked_items=True)
        seconds["recommend"] = time.perf_counter() - t

    # A table the size of the recommendations: one Parquet load, nothing else.
    n_rows = ids.size
    recs = pa.table({
        "run_date": pa.array([args.run_date] * n_rows, pa.date32()),
        "user_id": pa.array(np.repeat(users, args.n)),
        "rank": pa.array(np.tile(np.arange(1, args.n + 1), len(users)), pa.int64()),
        "item_id": pa.array(items[np.clip(ids.ravel(), 0, len(items) - 1)]),
        "score": pa.array(scores.ravel().astype(np.float64)),
    })
    buf = io.BytesIO()
    pq.write_table(recs, buf)
    buf.seek(0)
    destination = f"{args.project}.{args.dataset}._floor_recommendations"
    t = time.perf_counter()
    job = client.load_table_from_file(buf, destination, job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, write_disposition="WRITE_TRUNCATE"))
    job.result()
    seconds["parquet_load"] = time.perf_counter() - t
    client.delete_table(destination, not_found_ok=True)

    data = seconds["query_and_read"] + seconds["parquet_load"]
    compute = seconds["csr"] + seconds["fit"] + seconds["recommend"]
    print(json.dumps({
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "data_floor": round(data, 2), "compute_floor": round(compute, 2), "floor": round(data + compute, 2),
        "interactions": int(matrix.nnz), "users": len(users), "items": len(items),
        "recommendation_rows": n_rows,
        "deduplication": {"query_and_read_s": round(dedup_seconds, 2),
                          "without_s": round(seconds["query_and_read"], 2),
                          "extra_s": round(dedup_seconds - seconds["query_and_read"], 2),
                          **billed},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
