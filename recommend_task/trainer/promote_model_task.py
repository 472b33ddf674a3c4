"""Publish a run's evaluated model by atomically replacing the ``models/LATEST`` pointer.

Promotion is monotonic: a model whose run date is older than the published model's (a
backfill) is evaluated and recorded but never published, and the step still succeeds. Rolling
back is explicit: ``--rollback-to MODEL_ID`` publishes any earlier model that passed
evaluation. A model without an evaluation or with a failed verdict is refused either way. The
pointer is swapped with a generation precondition; on a lost race the step re-reads it and
applies the rule again, so concurrent promotions end with the newest model whatever their order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import sys
from typing import Any

from trainer import contract
from trainer.core.errors import ConcurrentUpdateError, TrainerError, VerdictFailedError
from trainer.model.model_artifact import ModelInfo, check_model
from trainer.step import cli
from trainer.storage import artifacts, layout, retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.model_pointer import read_pointer, swap_pointer
from trainer.storage.partitions import upsert_row

log = logging.getLogger("trainer.promote_model_task")

SWAP_ATTEMPTS = 5
MODEL_ID = re.compile(r"als-[0-9]{8}-[0-9a-f]{10}")  # what train_task.model_id_for makes


def build_parser() -> argparse.ArgumentParser:
    # The docstring's first paragraph is the --help text (unchanged, so it names the pointer's
    # path as contract.LATEST_POINTER has it).
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-uri", help="model to promote (default: the run's candidate)")
    source.add_argument("--rollback-to", metavar="MODEL_ID",
                        help="publish this earlier model, even though it is older than the published one")
    parser.add_argument("--keep-models", type=int, default=retention.DEFAULT_KEEP_MODELS,
                        help="besides the published model, how many of the newest models the bucket's "
                        "lifecycle rule must not delete; the others are marked for it (customTime)")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "artifacts_uri")
    if args.rollback_to is not None and not MODEL_ID.fullmatch(args.rollback_to.strip()):
        raise TrainerError(f"--rollback-to needs the id of a model (e.g. als-20261129-ff0958af2f), "
                           f"got {args.rollback_to!r}")
    if args.keep_models < 1:
        raise TrainerError(f"--keep-models must be at least 1, got {args.keep_models}")


def passed_evaluation(store: artifacts.ArtifactStore, model: ModelInfo, model_uri: str) -> dict:
    """The model's evaluation; refuses a model never evaluated or with a failed verdict."""
    evaluation_uri = artifacts.join(model_uri, contract.EVALUATION_RECORD)
    try:
        evaluation = store.read_json(evaluation_uri)
    except FileNotFoundError:
        raise TrainerError(f"model {model.model_id} has not been evaluated: {evaluation_uri} "
                           "not found (run evaluate_task first)") from None
    if evaluation.get("verdict") != "pass":
        raise VerdictFailedError(f"model {model.model_id} failed evaluation, not promoting: "
                                 + "; ".join(evaluation.get("reasons", [])))
    return evaluation


def why_not_publish(current: dict[str, Any] | None, model_id: str, run_date: str) -> str | None:
    """The monotonic rule: None to publish, else the reason not to."""
    if current is None or current.get("run_date", "") <= run_date:
        return None
    return (f"model {model_id} (run date {run_date}) is older than the published model "
            f"{current['model_id']} (run date {current['run_date']}): evaluated and recorded, "
            "not published (publish it explicitly with --rollback-to)")


def main(args: argparse.Namespace) -> None:
    validate(args)
    store = artifacts.ArtifactStore(args.project)
    if args.rollback_to:
        model_uri = layout.model_prefix(args.artifacts_uri, args.rollback_to.strip())
    else:
        model_uri = args.model_uri or layout.candidate_model_uri(store, args.artifacts_uri, args.run_date)
    model = check_model(store, model_uri)  # refuses a missing or damaged model
    evaluation = passed_evaluation(store, model, model_uri)
    model_run_date = str(model.metadata.get("run_date") or args.run_date.isoformat())
    if args.rollback_to:
        retention.keep_model(store, model_uri)  # before the pointer names it again
    outcome = publish(store, args.artifacts_uri, model, model_uri, model_run_date, evaluation,
                      rollback=bool(args.rollback_to))
    published, _ = read_pointer(store, args.artifacts_uri)
    if published and published["model_id"] == model.model_id:
        record_publication(args, published)
    retention.mark_superseded_models(store, args.artifacts_uri, published and published["model_id"],
                                     args.keep_models)
    if not args.rollback_to:  # the run's record, for the run summary (Slack)
        store.write_json(artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date),
                                        contract.PROMOTION_RECORD), outcome)


def publication_row(pointer: dict[str, Any]) -> dict[str, Any]:
    """The ``publications`` row of a pointer record: everything comes from the record, so a
    retry or a later run that finds the model already published writes the same row again."""
    published_at = dt.datetime.fromisoformat(pointer["promoted_at"])
    primary = pointer.get("primary_metric")
    return {
        "published_date": published_at.date(), "published_at": published_at,
        "model_id": pointer["model_id"], "model_run_date": dt.date.fromisoformat(pointer["run_date"]),
        "previous_model_id": pointer.get("previous_model_id"), "is_rollback": bool(pointer.get("rollback")),
        "primary_metric": primary, "primary_value": (pointer.get("metrics") or {}).get(primary),
        "airflow_run_id": pointer.get("airflow_run_id"), "image": pointer.get("image"),
    }


def record_publication(args: argparse.Namespace, pointer: dict[str, Any]) -> None:
    """Upsert the pointer's ``publications`` row (the history the Recommender page shows)."""
    if not args.project:
        log.info("no --project: the publication of %s is not recorded in %s", pointer["model_id"],
                 tables.PUBLICATIONS)
        return
    client = bigquery_client(args.project, args.location)
    tables.ensure_dataset(client, args.project, args.dataset, args.location)
    table = tables.ensure_table(client, args.project, args.dataset, tables.PUBLICATIONS_SPEC)
    upsert_row(client, table, tables.PUBLICATIONS_SPEC.schema, publication_row(pointer),
               key=("published_date", "published_at", "model_id"))
    log.info("recorded the publication of %s at %s in %s", pointer["model_id"], pointer["promoted_at"], table)


def publish(store: artifacts.ArtifactStore, artifacts_uri: str, model: ModelInfo, model_uri: str,
            model_run_date: str, evaluation: dict, *, rollback: bool) -> dict[str, Any]:
    """Swap the pointer to ``model`` unless the monotonic rule (skipped for a rollback) says
    no; re-read and re-decide when another promotion wins the race. Returns what happened."""
    outcome = {"model_id": model.model_id, "run_date": model_run_date}
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        current, generation = read_pointer(store, artifacts_uri)
        if current and current["model_id"] == model.model_id:
            log.info("model %s is already published; nothing to do", model.model_id)
            return {**outcome, "published": True, "reason": "already published"}
        reason = None if rollback else why_not_publish(current, model.model_id, model_run_date)
        if reason:
            log.info("%s", reason)
            return {**outcome, "published": False, "reason": reason}
        primary = evaluation["primary_metric"]
        record = {
            "model_id": model.model_id,
            "model_uri": model_uri,
            "run_date": model_run_date,
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
            "primary_metric": primary,
            "k": evaluation["k"],
            "metrics": evaluation["metrics"]["model"],
            "previous_model_id": current["model_id"] if current else None,
            "rollback": rollback,
            "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
            "image": os.environ.get(contract.IMAGE_ENV) or None,
        }
        try:
            swap_pointer(store, artifacts_uri, record, generation)
        except ConcurrentUpdateError:
            log.warning("%s changed while publishing (attempt %d/%d): reading it again",
                        contract.LATEST_POINTER, attempt, SWAP_ATTEMPTS)
            continue
        log.info("%s model %s (run date %s, %s@%d=%.4f), previous: %s",
                 "rolled back to" if rollback else "published", model.model_id, model_run_date, primary,
                 evaluation["k"], evaluation["metrics"]["model"][primary], record["previous_model_id"])
        return {**outcome, "published": True, "reason": "rollback" if rollback else "newest model"}
    raise ConcurrentUpdateError(f"{contract.LATEST_POINTER} kept changing under {SWAP_ATTEMPTS} attempts "
                                f"to publish {model.model_id}; re-run to retry")


if __name__ == "__main__":
    sys.exit(cli.run_step("promote_model_task", main, build_parser(), validate=validate))
