"""Publish a run's evaluated model by atomically replacing the ``models/LATEST`` pointer.

Refuses a model without an evaluation or with a failed verdict. The pointer is swapped with a
generation precondition, so two concurrent promotions cannot silently overwrite each other;
the record keeps the previous model id for a manual rollback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from trainer import artifacts, cli, layout
from trainer.errors import TrainerError, VerdictFailedError
from trainer.model import load_model
from trainer.publishing import read_pointer, swap_pointer

log = logging.getLogger("trainer.promote_model_task")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    parser.add_argument("--model-uri", help="model to promote (default: the run's candidate)")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "artifacts_uri")


def main(args: argparse.Namespace) -> None:
    validate(args)
    store = artifacts.ArtifactStore(args.project)
    model_uri = args.model_uri or layout.candidate_model_uri(store, args.artifacts_uri, args.run_date)
    model = load_model(store, model_uri)  # refuses a missing or damaged model
    evaluation_uri = artifacts.join(model_uri, "evaluation.json")
    try:
        evaluation = store.read_json(evaluation_uri)
    except FileNotFoundError:
        raise TrainerError(f"model {model.model_id} has not been evaluated: {evaluation_uri} "
                           "not found (run evaluate_task first)") from None
    if evaluation.get("verdict") != "pass":
        raise VerdictFailedError(f"model {model.model_id} failed evaluation, not promoting: "
                                 + "; ".join(evaluation.get("reasons", [])))

    current, generation = read_pointer(store, args.artifacts_uri)
    if current and current["model_id"] == model.model_id:
        log.info("model %s is already published; nothing to do", model.model_id)
        return
    primary = evaluation["primary_metric"]
    record = {
        "model_id": model.model_id,
        "model_uri": model_uri,
        "run_date": args.run_date.isoformat(),
        "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
        "primary_metric": primary,
        "k": evaluation["k"],
        "metrics": evaluation["metrics"]["model"],
        "previous_model_id": current["model_id"] if current else None,
    }
    swap_pointer(store, args.artifacts_uri, record, generation)
    log.info("published model %s (%s@%d=%.4f), previous: %s", model.model_id, primary,
             evaluation["k"], evaluation["metrics"]["model"][primary], record["previous_model_id"])


if __name__ == "__main__":
    sys.exit(cli.run_step("promote_model_task", main, build_parser(), validate=validate))
