"""What every step shares: common arguments, logging, timings and the one-line error contract."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator

from google.api_core import exceptions as gexc

from trainer.errors import TrainerError
from trainer.window import parse_date

log = logging.getLogger("trainer")

EXIT_ERROR = 2


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments common to every step; defaults come from the environment where it makes sense
    so a developer's shell can stay short, while the DAGs always pass them explicitly."""
    parser = argparse.ArgumentParser(
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
        "--run-date", required=True, type=parse_date_arg,
        help="last day (UTC, YYYY-MM-DD) of the event window",
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


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Log how long a block took."""
    start = time.perf_counter()
    yield
    log.info("%s took %.2fs", what, time.perf_counter() - start)


def require(args: argparse.Namespace, *names: str) -> None:
    """Fail with one line when an argument that may come from the environment is missing."""
    missing = [n for n in names if not getattr(args, n)]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise TrainerError(f"missing required argument(s): {flags}")


def run_step(name: str, main: Callable[[argparse.Namespace], None],
             parser: argparse.ArgumentParser, argv: list[str] | None = None,
             validate: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Parse arguments, run ``main`` and turn failures into one clear line and exit code 2.

    ``validate`` is the step's own argument check (``main`` calls it first); with
    ``--validate-only`` it runs alone, so callers (the DAGs' param limits test) use the step's
    real rules, not a copy of them."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    start = time.perf_counter()
    log.info("step %s starting", name)
    try:
        if args.validate_only:
            (validate or (lambda _: None))(args)
            log.info("step %s: arguments valid (--validate-only: nothing read or written)", name)
            return 0
        main(args)
    except TrainerError as exc:
        log.error("step %s failed after %.2fs", name, time.perf_counter() - start)
        print(f"ERROR: {name}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except gexc.GoogleAPICallError as exc:
        log.error("step %s failed after %.2fs", name, time.perf_counter() - start)
        message = getattr(exc, "message", None) or str(exc)
        print(f"ERROR: {name}: {type(exc).__name__}: {message.splitlines()[0]}",
              file=sys.stderr, flush=True)
        return EXIT_ERROR
    except Exception as exc:
        log.exception("step %s crashed after %.2fs", name, time.perf_counter() - start)
        print(f"ERROR: {name}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    log.info("step %s finished in %.2fs", name, time.perf_counter() - start)
    return 0
