"""What every step shares: common arguments, logging, timings and the one-line error contract:
a ``<ERROR_PREFIX> <step>: <message>`` line (:data:`trainer.contract.ERROR_PREFIX`), an exit code
from :mod:`trainer.step.exit_codes` and a status record (:mod:`trainer.step.status_record`)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable

from trainer.contract import ERROR_PREFIX
from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.data.date_windows import check_run_date, parse_date
from trainer.step import lifeline, status_record
from trainer.step.exit_codes import EXIT_CRASH, EXIT_OK, EXIT_PERMANENT, classify

log = logging.getLogger("trainer")


class ArgumentsError(TrainerError):
    """The command line is wrong (permanent: the same arguments fail again)."""


class StepArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises instead of exiting, so the step reports it like any
    other permanent error (one error line, exit code 2, a status record)."""

    def error(self, message: str):
        raise ArgumentsError(f"bad arguments: {message}")


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments common to every step; defaults come from the environment where it makes sense
    so a developer's shell can stay short, while the DAGs always pass them explicitly."""
    parser = StepArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--project",
        default=os.environ.get("RECSYS_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT"),
        help="Google Cloud project of the BigQuery dataset (env RECSYS_GCP_PROJECT)",
    )
    parser.add_argument(
        "--dataset",
        default=os.environ.get("RECSYS_BQ_DATASET", "recsys"),
        help="BigQuery dataset holding events, model_metrics and recommendations",
    )
    parser.add_argument(
        "--location",
        default=os.environ.get("RECSYS_BQ_LOCATION", "US"),
        help="BigQuery location for the dataset and jobs",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("RECSYS_LOG_LEVEL", "INFO"), help="logging level"
    )
    parser.add_argument(
        "--validate-only", action="store_true",
        help="check the arguments exactly as the step does, read and write nothing, exit 0 if valid",
    )
    return parser


def add_run_date(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-date", required=True, type=parse_run_date_arg,
        help="last day (UTC, YYYY-MM-DD) of the event window; before today",
    )


def add_artifacts_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts-uri",
        default=os.environ.get("RECSYS_ARTIFACTS_URI"),
        help="root for matrices and models: gs://bucket/prefix or a local directory "
        "(env RECSYS_ARTIFACTS_URI)",
    )


def parse_date_arg(value: str):
    try:
        return parse_date(value)
    except TrainerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_run_date_arg(value: str):
    """``--run-date``: a date before today (:func:`trainer.data.date_windows.check_run_date`)."""
    try:
        return check_run_date(parse_date(value))
    except TrainerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Client libraries are chatty at INFO; their warnings still show.
    for noisy in ("google", "urllib3", "implicit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def require(args: argparse.Namespace, *names: str) -> None:
    """Fail with one line when an argument that may come from the environment is missing."""
    missing = [n for n in names if not getattr(args, n)]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise TrainerError(f"missing required argument(s): {flags}")


def _attempt_location(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Where the status record goes when the arguments themselves are bad: what can be read of
    ``--artifacts-uri`` and ``--run-date`` (with the parser's own defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--artifacts-uri", default=parser.get_default("artifacts_uri"))
    probe.add_argument("--run-date")
    probe.add_argument("--project", default=parser.get_default("project"))
    known, _ = probe.parse_known_args(argv)
    try:
        run_date = parse_date(known.run_date) if known.run_date else None
    except TrainerError:
        run_date = None
    return known.artifacts_uri, run_date, known.project


def run_step(name: str, main: Callable[[argparse.Namespace], None],
             parser: argparse.ArgumentParser, argv: list[str] | None = None,
             validate: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Parse arguments, run ``main``, and turn the outcome into an exit code (see
    :mod:`trainer.step.exit_codes`), one error line and a status record in the run's artifacts.

    ``validate`` is the step's own argument check (``main`` calls it first); with
    ``--validate-only`` it runs alone, so callers (the DAGs' param limits test) use the step's
    real rules, not a copy of them."""
    lifeline.die_with_launcher()
    started_at = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    profile.reset()
    try:
        args = parser.parse_args(argv)
    except ArgumentsError as exc:
        setup_logging(os.environ.get("RECSYS_LOG_LEVEL", "INFO"))
        parser.print_usage(sys.stderr)
        artifacts_uri, run_date, project = _attempt_location(parser, argv)
        status_record.write(artifacts_uri, run_date, name, status_record.build(
            name, EXIT_PERMANENT, str(exc), run_date, started_at, dt.datetime.now(dt.UTC)), project)
        _print_error(name, str(exc))
        return EXIT_PERMANENT
    setup_logging(args.log_level)
    log.info("step %s starting", name)
    code, error = EXIT_OK, ""
    try:
        if args.validate_only:
            (validate or (lambda _: None))(args)
            log.info("step %s: arguments valid (--validate-only: nothing read or written)", name)
            return EXIT_OK
        main(args)
    except Exception as exc:
        code, error = classify(exc)
        if code == EXIT_CRASH:
            log.exception("step %s crashed after %.2fs", name, time.perf_counter() - start)
        else:
            log.error("step %s failed after %.2fs (exit %d)", name, time.perf_counter() - start, code)
        if args.validate_only:
            _print_error(name, error)
            return code
    else:
        log.info("step %s finished in %.2fs (peak RSS %.0f MiB)", name, time.perf_counter() - start,
                 profile.peak_rss_mib())
    status_record.write(getattr(args, "artifacts_uri", None), getattr(args, "run_date", None), name,
                 status_record.build(name, code, error, getattr(args, "run_date", None), started_at,
                              dt.datetime.now(dt.UTC)), getattr(args, "project", None))
    if code != EXIT_OK:
        _print_error(name, error)
    return code


def _print_error(name: str, error: str) -> None:
    """The step's one-line error, always its last line of output (after the status record is
    written, which may log): launchers that keep only a process's last line still get it."""
    sys.stdout.flush()
    print(f"{ERROR_PREFIX} {name}: {error}", file=sys.stderr, flush=True)
