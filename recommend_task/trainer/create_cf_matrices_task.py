"""Build the collaborative-filtering matrices for one run from the events in BigQuery.

First checks the run date's events against the 7 days before it (:mod:`trainer.data.day_validation`:
the day's statistics go to the ``event_stats`` table, and a day that breaks an anomaly rule is
refused, exit 2, unless ``--accept-anomalies true``). With ``RECSYS_DATA_CHECK`` set it stops
there (recommend_train's ``check_events``): ``decide`` ends 0 on an anomalous day, recorded for
the approval task; ``refuse`` fails as above. Otherwise it then reads the window of
``--lookback-days`` ending at ``--run-date``, drops and counts invalid rows, aggregates weights
per (user, item) in SQL, and writes ``runs/<run_date>/matrices.npz`` plus ``manifest.json``
(window, counts, checksum) under ``--artifacts-uri``. The last ``--holdout-days`` are kept
apart as the evaluation holdout. It also writes the whole window's interactions (``window.npz``)
for predict_task to reuse while the events are unchanged (:mod:`trainer.data.interaction_cache`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys

from trainer import contract
from trainer.core import profile
from trainer.core.errors import EmptyWindowError, TrainerError
from trainer.data import anomaly_rules
from trainer.data.date_windows import split_window
from trainer.data.day_validation import validate_day
from trainer.data.events import EventSource, add_window_args, check_window_args
from trainer.data.interaction_cache import WINDOW_FILE, WindowInteractions, describe, partitions_version
from trainer.model.matrices import CFMatrices, WindowCodes, build_window, sha256
from trainer.step import cli, preflight
from trainer.storage import artifacts, retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.layout import run_prefix

log = logging.getLogger("trainer.create_cf_matrices_task")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    add_window_args(parser)
    anomaly_rules.add_arguments(parser)
    retention.add_table_arguments(parser)
    parser.add_argument("--holdout-days", type=int, default=2,
                        help="last days of the window kept apart for evaluation")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    mode = os.environ.get(contract.DATA_CHECK_ENV, "").strip()
    if mode and mode not in contract.DATA_CHECK_MODES:
        raise TrainerError(f"{contract.DATA_CHECK_ENV}={mode!r} is not one of "
                           f"{', '.join(contract.DATA_CHECK_MODES)}")
    check_window_args(args)
    anomaly_rules.rules_from(args)
    retention.table_retention(args)
    split_window(args.run_date, args.lookback_days, args.holdout_days)


def main(args: argparse.Namespace) -> None:
    validate(args)
    window = split_window(args.run_date, args.lookback_days, args.holdout_days)
    client = bigquery_client(args.project, args.location)
    source = EventSource(client, tables.table_id(args.project, args.dataset, tables.EVENTS),
                         args.max_id_bytes)
    store = artifacts.ArtifactStore(args.project)

    with profile.phase("check", "checking the run date's events"):
        source.check_exists()
        day = validate_day(client, store, project=args.project, dataset=args.dataset,
                           events_table=source.table, run_date=args.run_date,
                           weights=args.event_weights, max_id_bytes=args.max_id_bytes,
                           valid_from=window.full.start,
                           rules=anomaly_rules.rules_from(args), accept=args.accept_anomalies,
                           artifacts_uri=args.artifacts_uri,
                           metrics_retention_days=retention.table_retention(args).metrics_days,
                           refuse=os.environ.get(contract.DATA_CHECK_ENV, "").strip() != "decide")
    if os.environ.get(contract.DATA_CHECK_ENV, "").strip():
        log.info("data check of %s: %s%s", args.run_date, day["status"],
                 "".join(f"\n  {line}" for line in day["anomalies"]))
        return
    with profile.phase("read", "reading events"):
        # Before the read: a change during it then shows as a different version later.
        version = partitions_version(client, source.table, window.full)
        events = (sum(rows for partition, rows, _ in version if partition != "__NULL__")
                  if version is not None else source.count(window.full))
        preflight.check("create_cf_matrices_task", preflight.create_cf_estimate(events=events),
                        preflight.Machine.detect(), time_budget_s=None)
        report, interactions = source.read_checked(
            window.full, args.event_weights, args.max_bad_fraction,
            holdout_start=window.holdout.start if window.holdout else None,
            validation_start=window.validation.start if window.validation else None,
        )

    profile.count("rows_in", report.rows_read)
    with profile.phase("build", "building matrices"):
        codes = WindowCodes.encode(interactions)
        del interactions  # the string ids: most of the read's memory, no longer needed
        if codes.in_holdout.all():
            raise EmptyWindowError(f"no valid events in the training days {window.train} (all "
                                   f"{len(codes.rows)} interactions fall in the holdout {window.holdout})")
        built = build_window(codes)
        del codes
    users, items, train, holdout = built.users, built.items, built.train, built.holdout
    cold_users = built.holdout_cold_users
    # Every user of the window, holdout days included, over the items a model of this run
    # knows: what predict_task would otherwise aggregate again.
    whole = WindowInteractions(built.window_users, items, built.whole)
    density = train.nnz / max(1, train.shape[0] * train.shape[1])
    log.info("train matrix shape=%s nnz=%d density=%.4f; holdout nnz=%d over %d users",
             train.shape, train.nnz, density, holdout.nnz if holdout is not None else 0,
             int((holdout.getnnz(axis=1) > 0).sum()) if holdout is not None else 0)

    with profile.phase("write", "serialising matrices"):
        payload = CFMatrices(users=users, items=items, train=train, holdout=holdout,
                             validation=built.validation).to_bytes()
        window_payload = whole.to_bytes()
    prefix = run_prefix(args.artifacts_uri, args.run_date)
    manifest = {
        "run_date": args.run_date.isoformat(),
        "window": window.to_dict(),
        "lookback_days": args.lookback_days,
        "holdout_days": args.holdout_days,
        "event_weights": args.event_weights,
        "source_table": source.table,
        "quality": report.to_dict(),
        "event_stats": {k: day[k] for k in ("status", "anomalies", "accepted", "table")},
        "counts": {
            "users": len(users),
            "items": len(items),
            "train_nnz": int(train.nnz),
            "holdout_nnz": int(holdout.nnz) if holdout is not None else 0,
            "holdout_users": int((holdout.getnnz(axis=1) > 0).sum()) if holdout is not None else 0,
            "holdout_cold_users": cold_users,
            "validation_nnz": int(built.validation.nnz) if built.validation is not None else 0,
        },
        "matrices_uri": artifacts.join(prefix, contract.MATRICES_FILE),
        "sha256": sha256(payload),
        "bytes": len(payload),
        "window_interactions": describe(artifacts.join(prefix, WINDOW_FILE), window_payload,
                                        source.table, window.full, args.event_weights,
                                        report.to_dict(), version),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    # Matrices first, manifest last: a manifest always describes a complete matrices file.
    with profile.phase("write", f"writing {len(payload) + len(window_payload)} bytes of matrices"):
        store.write_bytes(manifest["matrices_uri"], payload)
        store.write_bytes(manifest["window_interactions"]["uri"], window_payload)
        store.write_json(artifacts.join(prefix, contract.MANIFEST_RECORD), manifest)
    profile.count("rows_out", int(train.nnz) + (int(holdout.nnz) if holdout is not None else 0))
    log.info("wrote %s (%d bytes, sha256 %s) and manifest.json", manifest["matrices_uri"],
             len(payload), manifest["sha256"][:12])


if __name__ == "__main__":
    sys.exit(cli.run_step("create_cf_matrices_task", main, build_parser(), validate=validate))
