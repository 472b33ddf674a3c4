"""How a step ends: the exit codes every launcher (Vertex AI, Docker, a subprocess) reads.

==== ============ ===========================================================================
code outcome      meaning
==== ============ ===========================================================================
0    succeeded
2    permanent    a retry cannot fix it: bad input or arguments, a failed gate, a damaged or
                  missing artifact, a refused request (404, 400, 403 other than rate limits)
75   transient    an external service failed or was busy (5xx, 429, rate limits, timeouts,
                  lost connections, a BigQuery concurrent-update abort, a lost pointer race):
                  retry with backoff (75 is ``EX_TEMPFAIL`` of sysexits.h)
1    crash        anything unexpected (a bug, out of memory): retried, the traceback is logged
==== ============ ===========================================================================
"""

from __future__ import annotations

import re

from google.api_core import exceptions as gexc

# The codes and their names are the launchers' contract: defined once, in trainer.contract.
from trainer.contract import EXIT_CRASH, EXIT_OK, EXIT_PERMANENT, EXIT_TRANSIENT, OUTCOMES, outcome
from trainer.core.errors import TrainerError, TransientError

__all__ = ["EXIT_CRASH", "EXIT_OK", "EXIT_PERMANENT", "EXIT_TRANSIENT", "OUTCOMES", "classify", "outcome"]

# BigQuery reports rate limits as 403 and some transient job failures as 400: its error reason
# and message tell them apart from a real refusal.
_TRANSIENT_REASONS = frozenset({"rateLimitExceeded", "jobRateLimitExceeded", "backendError",
                                "internalError", "jobBackendError", "jobInternalError"})
_TRANSIENT_MESSAGE = re.compile(r"concurrent update|could not serialize access", re.IGNORECASE)
_TRANSIENT_API_ERRORS = (gexc.ServerError, gexc.TooManyRequests, gexc.Aborted,
                         gexc.DeadlineExceeded, gexc.ServiceUnavailable)


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def _is_transport_error(exc: BaseException) -> bool:
    """Connection refused or reset, DNS, TLS, read timeouts: the network, not the request."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    import google.auth.exceptions
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            google.auth.exceptions.TransportError))


def _api_error_is_transient(exc: gexc.GoogleAPICallError) -> bool:
    if isinstance(exc, _TRANSIENT_API_ERRORS) or (exc.code is not None and int(exc.code) >= 500):
        return True
    reasons = {e.get("reason") for e in (getattr(exc, "errors", None) or []) if isinstance(e, dict)}
    return bool(reasons & _TRANSIENT_REASONS) or bool(_TRANSIENT_MESSAGE.search(exc.message or ""))


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code for ``exc`` and the one-line message the step prints after the error prefix
    (:data:`trainer.contract.ERROR_PREFIX`)."""
    if isinstance(exc, TransientError):
        return EXIT_TRANSIENT, _first_line(exc)
    if isinstance(exc, TrainerError):
        return EXIT_PERMANENT, _first_line(exc)
    if isinstance(exc, gexc.GoogleAPICallError):
        message = f"{type(exc).__name__}: {_first_line(exc.message or exc)}"
        return (EXIT_TRANSIENT if _api_error_is_transient(exc) else EXIT_PERMANENT), message
    if isinstance(exc, gexc.RetryError):  # the client's own retries ran out of time
        cause = exc.cause
        last = f"; last error: {type(cause).__name__}: {_first_line(cause)}" if cause else ""
        return EXIT_TRANSIENT, f"RetryError: {_first_line(exc.message)}{last}"
    if _is_transport_error(exc):
        return EXIT_TRANSIENT, f"{type(exc).__name__}: {_first_line(exc)}"
    return EXIT_CRASH, f"unexpected {type(exc).__name__}: {_first_line(exc)}"

