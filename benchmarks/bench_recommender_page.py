"""`make bench`: the Recommender page's data endpoint over 365 days of history on the emulators
(a benchmark that prints its figures, not a test: no thresholds here).

The history starts as one real day: seeded events, then recommend_train's, recommend_predict's
and recommend_feedback's trainer steps (tests/dags/support/page_history.py), which write one row each to
``model_metrics``, ``event_stats``, ``serving_metrics`` and ``publications`` with every column
production fills. Those rows are copied to each of the 364 days before, dates and the ids and
run ids that carry them shifted, so that the tables hold a year: a model a day (every tenth one
failing evaluation and not published), a publication a day (a rollback every thirtieth), a data
check and a served day each day. The requests go through Airflow's own API server app with the
plugin mounted and Airflow's authentication (a signed-in admin's token), in process: the figure
is the endpoint's work (auth, the BigQuery queries and the GCS read, the JSON), not a network.

    .venv/airflow/bin/python benchmarks/bench_recommender_page.py [--repeat 10]

Prints the first request's time and the median and slowest of ``--repeat`` more, for
``/recommender/api/overview`` at 365 and 30 days and for the page itself at 365 days. Then the
bytes one model page view would bill on BigQuery (computed from the partitions and columns it reads;
the emulator reports 0). The last line is exactly ``overview_365d_median_s=S overview_365d_max_s=S
models=N``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests" / "dags"
sys.path[:0] = [str(TESTS), str(TESTS.parents[1] / "recommend_task")]
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"  # the figures, not every request's log
os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = secrets.token_hex(32)  # the bench's tokens only
import conftest  # noqa: E402  (Airflow configured for a throwaway home before it is imported)

DAYS = 365
TABLES = ("model_metrics", "event_stats", "serving_metrics", "publications")


def real_day(day: dt.date) -> None:
    """One day of history written by the real trainer steps."""
    from support.page_history import predict_day, seed, step, train_day

    seed(day + dt.timedelta(days=1), days=14)
    train_day(day)
    predict_day(day)
    step("feedback_task", "recommend_feedback", "feedback", day + dt.timedelta(days=1),
         "--lookback-days", "12", "--alert-min-users", "1")


def _shift(value, days: int, day: dt.date):
    """``value`` moved ``days`` earlier: dates and timestamps, and the dates inside ids."""
    if isinstance(value, dt.datetime | dt.date):
        return value - dt.timedelta(days=days)
    if isinstance(value, str):
        earlier = day - dt.timedelta(days=days)
        return (value.replace(day.isoformat(), earlier.isoformat())
                .replace(day.strftime("%Y%m%d"), earlier.strftime("%Y%m%d"))
                .replace(str(day + dt.timedelta(days=1)), str(earlier + dt.timedelta(days=1))))
    if isinstance(value, list):
        return [_shift(v, days, day) for v in value]
    if isinstance(value, dict):
        return {k: _shift(v, days, day) for k, v in value.items()}
    return value


def _json(value):
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def a_year_of(table: str, row: dict, day: dt.date) -> list[dict]:
    """The real row of ``day`` copied to each of the DAYS - 1 days before it."""
    out = []
    for back in range(1, DAYS):
        copy = _shift(row, back, day)
        model_day = day - dt.timedelta(days=back)
        if table == "model_metrics" and back % 10 == 0:
            copy.update(verdict="fail", reasons="model recall@k below popularity's by the minimum lift")
        if table == "publications":
            if (back + 1) % 10 == 0:  # the day before was a failed model: it was never published
                copy["previous_model_id"] = _shift(row["model_id"], back + 2, day)
            else:
                copy["previous_model_id"] = _shift(row["model_id"], back + 1, day)
            if back % 10 == 0:
                continue
            copy["is_rollback"] = back % 30 == 1
        if table == "serving_metrics" and back % 10 == 0:
            # A failed day served the day before's model.
            copy["model_id"] = _shift(row["model_id"], back + 1, day)
        assert model_day.isoformat() in json.dumps(_json(copy)), (table, back)
        out.append(_json(copy))
    return out


def fill_a_year(day: dt.date) -> dict[str, int]:
    """Each table's real row copied over the year; the rows each table then holds."""
    from google.cloud import bigquery

    from trainer.storage import tables

    client = bigquery.Client(project=os.environ["RECSYS_GCP_PROJECT"],
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]},
                             credentials=_anonymous())
    dataset = f"{os.environ['RECSYS_GCP_PROJECT']}.{os.environ['RECSYS_BQ_DATASET']}"
    specs = {s.name: s for s in (tables.MODEL_METRICS_SPEC, tables.EVENT_STATS_SPEC,
                                 tables.SERVING_METRICS_SPEC, tables.PUBLICATIONS_SPEC)}
    counts = {}
    for name in TABLES:
        [row] = [dict(r.items()) for r in client.query(f"SELECT * FROM `{dataset}.{name}`").result()]
        job = client.load_table_from_json(
            a_year_of(name, row, day), f"{dataset}.{name}",
            job_config=bigquery.LoadJobConfig(schema=list(specs[name].schema),
                                              write_disposition="WRITE_APPEND"))
        job.result()
        [[counts[name]]] = client.query(f"SELECT COUNT(*) FROM `{dataset}.{name}`").result()
    return counts


def _anonymous():
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


FIXED = {"INT64": 8, "INTEGER": 8, "FLOAT64": 8, "FLOAT": 8, "TIMESTAMP": 8, "DATE": 8, "BOOL": 1,
         "BOOLEAN": 1}


def _value_bytes(kind: str, value) -> int:
    """BigQuery's documented on-demand size of one value (STRING: 2 + UTF-8 bytes)."""
    if value is None:
        return 0
    if isinstance(value, list):
        return sum(_value_bytes(kind, v) for v in value)
    return 2 + len(str(value).encode()) if kind == "STRING" else FIXED[kind]


def read_bytes(reads, table: str, columns, where: str = "", params: dict | None = None) -> tuple[int, int]:
    """(bytes, partitions) a query reading ``columns`` of the partitions ``where`` selects would
    bill: whole partitions, those columns (the emulator reports 0 bytes)."""
    schema = {f.name: f.field_type for f in reads.bigquery().get_table(f"{reads._table}.{table}").schema}
    partition = {"recommendations": "run_date", "model_metrics": "run_date",
                 "publications": "published_date"}[table]
    rows = reads.query(f"SELECT {', '.join(dict.fromkeys([*columns, partition]))} FROM "
                       f"`{reads._table}.{table}` {where}", params)
    return (sum(_value_bytes(schema[c], r[c]) for r in rows for c in columns),
            len({r[partition] for r in rows}))


def page_view_bytes(reads, model_id: str, today: dt.date) -> None:
    """What one model page view would bill on BigQuery, computed from the partitions and columns
    it reads, against what the page read before issue 39 (every recommendations partition since
    the model's run date, user_id included). The bench's recommendations hold one real day: a
    year's partitions are that day's bytes times the days (a day of a deployment is alike)."""
    from recommender.store import MODEL_COLUMNS, PUBLICATION_COLUMNS, SERVED_COLUMNS, model_run_date

    run_date = model_run_date(model_id)
    metrics, _ = read_bytes(reads, "model_metrics", [*MODEL_COLUMNS, "model_uri"], "WHERE run_date = @d",
                            {"d": run_date})
    pubs, _ = read_bytes(reads, "publications", PUBLICATION_COLUMNS)
    day_now, days = read_bytes(reads, "recommendations", SERVED_COLUMNS)
    day_before, _ = read_bytes(reads, "recommendations", ("run_date", "model_id", "user_id"))
    per_day_now, per_day_before = day_now // max(days, 1), day_before // max(days, 1)
    age = (today - run_date).days + 1
    now = metrics + pubs + per_day_now * 30
    before = metrics + pubs + per_day_before * age  # and model_metrics unbounded before: all partitions
    minimum = 3 * 10 * 2**20  # on-demand: at least 10 MB per table referenced
    print(f"model page of a model {age} days old: model_metrics {metrics:,} B (1 partition), publications "
          f"{pubs:,} B, recommendations {per_day_now:,} B/day x 30 days; before: {per_day_before:,} B/day x "
          f"{age} days", flush=True)
    print(f"page_view_bytes={now} page_view_bytes_before={before} page_view_billed_min_bytes="
          f"{max(now, minimum)}", flush=True)


def timed(client, path: str, headers: dict, repeat: int) -> tuple[float, list[float], bytes]:
    """(first request's seconds, the next ``repeat`` requests' seconds, the last body)."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        resp = client.get(path, headers=headers)
        times.append(time.perf_counter() - start)
        if resp.status_code != 200 or not resp.headers["content-type"].startswith(("application/json",
                                                                                  "text/html")):
            raise SystemExit(f"GET {path}: {resp.status_code} {resp.text[:500]}")
    return times[0], times[1:], resp.content


def measure(repeat: int) -> int:
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with TestClient(create_app("core"), base_url=conftest.AIRFLOW_BASE_URL.rstrip("/")) as client:
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="bench", role="ADMIN"))
        headers = {"Authorization": f"Bearer {token}"}
        figures = {}
        for label, path in (("overview_365d", "/recommender/api/overview?days=365"),
                            ("overview_30d", "/recommender/api/overview?days=30"),
                            ("page_365d", "/recommender/?days=365")):
            first, rest, body = timed(client, path, headers, repeat)
            figures[label] = (first, statistics.median(rest), max(rest))
            print(f"{label:<14} first {first:6.3f} s   median {figures[label][1]:6.3f} s   "
                  f"max {figures[label][2]:6.3f} s   ({len(body) / 1024:.0f} KiB)", flush=True)
            if label == "overview_365d":
                data = json.loads(body)
                models = len(data["models"])
                print(f"               {models} models, {len(data['serving'])} served days, "
                      f"{len(data['event_stats'])} data-check days, {len(data['publications'])} publications",
                      flush=True)
        # What any query costs on this emulator: the floor under each of the endpoint's queries
        # (they run side by side, with the GCS read of models/LATEST).
        from recommender.app import store

        floor = []
        for _ in range(repeat):
            start = time.perf_counter()
            store().query("SELECT 1 AS one")
            floor.append(time.perf_counter() - start)
        print(f"SELECT 1       median {statistics.median(floor):6.3f} s   (the emulator's cost of a query)",
              flush=True)
        page_view_bytes(store(), data["models"][0]["model_id"], dt.datetime.now(dt.UTC).date())
    _, median, slowest = figures["overview_365d"]
    print(f"overview_365d_median_s={median:.3f} overview_365d_max_s={slowest:.3f} models={models}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import emulators
    from airflow.utils import db

    home = Path(os.environ["AIRFLOW_HOME"])
    try:
        with emulators.running(home / "emulators", ["recsys-bench"], project="bench-project") as env:
            os.environ.update(env, RECSYS_GCP_PROJECT="bench-project", RECSYS_BQ_DATASET="recsys",
                              RECSYS_ARTIFACTS_URI="gs://recsys-bench/recsys")
            db.resetdb()
            day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
            started = time.perf_counter()
            real_day(day)
            print(f"history: one real day ({day}) through the trainer steps in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            started = time.perf_counter()
            counts = fill_a_year(day)
            print(f"history: copied over {DAYS} days in {time.perf_counter() - started:.0f} s: "
                  + ", ".join(f"{name} {n} rows" for name, n in counts.items()), flush=True)
            return measure(args.repeat)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
