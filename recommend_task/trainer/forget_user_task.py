"""Forget learners: erase their ids from every table and artifact the product wrote.

Deletes their rows from ``events`` (so the next training and prediction never learn them again)
and ``recommendations`` and every other table of the dataset with a ``user_id`` column, clears
them from ``event_stats`` (top user, anomaly lines), and rewrites every artifact that holds them:
matrices, window and model files without their rows (each with its checksums, a model still
loadable and publishable), records, status records and reports without their ids
(:mod:`trainer.data.erasure`). Safe to run again: a second run finds nothing left and says so; a
run killed midway leaves every artifact readable and the next run finishes the job. The log
and the record ``runs/<run_date>/forget.json`` give counts per place, never an id. What this
cannot reach in place (BigQuery time travel, Cloud Storage soft delete, Airflow's own logs):
docs/operations.md#forgetting-a-learner.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys

from trainer import contract
from trainer.core.errors import TrainerError
from trainer.data import erasure
from trainer.step import cli
from trainer.storage import artifacts, layout
from trainer.storage.clients import bigquery_client

log = logging.getLogger("trainer.forget_user_task")

MAX_IDS = 1000
MAX_ID_LENGTH = 1024


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    parser.add_argument("--user-id", action="append", default=[], metavar="LEARNER_ID",
                        help="a learner to forget, as in events.user_id (repeat for several, at most "
                        f"{MAX_IDS})")
    parser.add_argument("--user-ids-json", metavar="JSON",
                        help="learners to forget as a JSON list of strings (what the DAG's user_ids "
                        "param renders to); added to --user-id")
    return parser


def _from_json(value: str | None) -> list[str]:
    if value is None:
        return []
    try:
        ids = json.loads(value)
    except json.JSONDecodeError as exc:
        raise TrainerError(f"--user-ids-json is not JSON ({exc.msg} at character {exc.pos})") from None
    if ids is None:
        return []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise TrainerError("--user-ids-json must be a JSON list of strings")
    return ids


def learner_ids(args: argparse.Namespace) -> list[str]:
    """The ids to forget, each once, matched exactly; an empty or oversized one is refused
    without echoing it (the error line goes to logs and Slack)."""
    ids = list(dict.fromkeys([*args.user_id, *_from_json(args.user_ids_json)]))
    if not ids:
        raise TrainerError("no learner to forget: give --user-id or --user-ids-json (the DAG's user_ids "
                           "param) at least once")
    if len(ids) > MAX_IDS:
        raise TrainerError(f"at most {MAX_IDS} learners per run, got {len(ids)}")
    for n, value in enumerate(ids, 1):
        if not value or len(value) > MAX_ID_LENGTH:
            raise TrainerError(f"learner id #{n} is empty or longer than {MAX_ID_LENGTH} characters "
                               f"({len(value)}): give it exactly as in events.user_id")
    return ids


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    learner_ids(args)


def main(args: argparse.Namespace) -> None:
    validate(args)
    ids = learner_ids(args)
    log.info("forgetting %d learner(s) in %s.%s and under %s", len(ids), args.project, args.dataset,
             args.artifacts_uri)
    tally = erasure.Tally()
    client = bigquery_client(args.project, args.location)
    store = artifacts.ArtifactStore(args.project)
    # Events first: once they are gone no new run can learn the learners again, and whatever
    # an earlier run wrote is erased below.
    parts = erasure.erase_tables(client, args.project, args.dataset, ids, tally)
    erasure.ArtifactEraser(store, args.artifacts_uri, ids, tally).run()
    erasure.recount_parts(client, store, args.artifacts_uri, parts, tally)
    if tally.total():
        log.info("erased %d learner(s): %s", len(ids), "; ".join(f"{k} {v}" for k, v in tally.counts.items()))
    else:
        log.info("nothing left to erase for %d learner(s): no table row or artifact holds them", len(ids))
    record = artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date), contract.FORGET_RECORD)
    store.write_json(record, {
        "learners": len(ids), "erased": dict(tally.counts), "total": tally.total(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
    })


if __name__ == "__main__":
    sys.exit(cli.run_step("forget_user_task", main, build_parser(), validate=validate))
