"""Write synthetic learning events to BigQuery (for demos, tests and benchmarks).

Replaces the seeded days of the ``events`` table in one transaction (load job into a staging
table, then DELETE + INSERT), so seeding the same days twice never duplicates events and days
outside the seeded range are left alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.data import synthetic
from trainer.data.date_windows import lookback
from trainer.data.synthetic import ANOMALIES, SyntheticSpec, corrupt, generate_chunks, with_anomaly
from trainer.step import cli
from trainer.storage import retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.partitions import staging_table, swap_days

log = logging.getLogger("trainer.seed_events")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    d = SyntheticSpec()
    parser.add_argument("--end-date", required=True, type=_end_date,
                        help="last day (UTC) that gets events: YYYY-MM-DD, or `yesterday`")
    parser.add_argument("--days", type=int, default=d.days, help="number of days ending at --end-date")
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument("--items", type=int, default=d.items)
    parser.add_argument("--events", type=int, default=d.events)
    parser.add_argument("--clusters", type=int, default=d.clusters, help="planted user taste clusters")
    parser.add_argument("--affinity", type=float, default=d.affinity,
                        help="share of events a user spends inside their cluster's topic")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--corrupt-fraction", type=float, default=0.0,
                        help="share of rows to damage (null ids, skewed timestamps) for testing")
    parser.add_argument("--anomaly", help="make the last day anomalous, for the anomaly rules: "
                        + ", ".join(ANOMALIES))
    retention.add_table_arguments(parser)
    return parser


def _end_date(value: str) -> dt.date:
    """``yesterday`` is the last complete UTC day, which a fresh stack's first runs read."""
    if value == "yesterday":
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    return cli.parse_date_arg(value)


def main(args: argparse.Namespace) -> None:
    cli.require(args, "project")
    for name in ("days", "users", "items", "events", "clusters"):
        if getattr(args, name) < 1:
            raise TrainerError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.affinity <= 1 or not 0 <= args.corrupt_fraction < 1:
        raise TrainerError("--affinity must be in [0, 1] and --corrupt-fraction in [0, 1)")
    days = lookback(args.end_date, args.days)  # refuses days before window.EARLIEST_DATE
    spec = SyntheticSpec(users=args.users, items=args.items, events=args.events, days=args.days,
                         end_date=args.end_date, clusters=args.clusters, affinity=args.affinity,
                         seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="seed-events-") as tmp:
        # Chunk by chunk into one Parquet file, then one load job: memory stays at a chunk's
        # whatever --events, and the days are still replaced in one transaction.
        parquet = Path(tmp) / "events.parquet"
        with profile.phase("build", "generating events"):
            rows = _write_events(spec, args, parquet)
        log.info("generated %d events: %d users, %d items, %d days ending %s, seed %d%s",
                 rows, args.users, args.items, args.days, args.end_date, args.seed,
                 f", {args.end_date} made anomalous: {args.anomaly}" if args.anomaly else "")
        client = bigquery_client(args.project, args.location)
        tables.ensure_all(client, args.project, args.dataset, args.location,
                          retention.table_retention(args))
        target = tables.table_id(args.project, args.dataset, tables.EVENTS)
        with profile.phase("write", "loading events"), staging_table(
            client, target, parquet, list(tables.EVENTS_SPEC.schema)
        ) as staging:
            swap_days(client, target, staging, "event_date", days.start, days.end)
    log.info("rows written=%d to %s for %s", rows, target, days)


def _write_events(spec: SyntheticSpec, args: argparse.Namespace, path: Path) -> int:
    """The spec's events, damaged and made anomalous as asked, written to ``path``; rows written."""
    writer, drawn, rows = None, 0, 0
    try:
        for chunk, events in enumerate(generate_chunks(spec)):
            drawn += len(events)  # before the anomaly adds or drops rows
            events = corrupt(events, args.corrupt_fraction, args.seed, chunk)
            if args.anomaly:
                try:
                    events = with_anomaly(events, args.anomaly, args.end_date, args.seed, chunk)
                except ValueError as exc:
                    raise TrainerError(f"--anomaly: {exc}") from None
            writer = writer or pq.ParquetWriter(path, events.schema)
            writer.write_table(events)
            rows += len(events)
            if spec.events > synthetic.CHUNK_EVENTS:
                log.info("generated %d of %d events", drawn, spec.events)
    finally:
        if writer is not None:
            writer.close()
    return rows

if __name__ == "__main__":
    sys.exit(cli.run_step("seed_events", main, build_parser()))
