"""Error text safe to show: where a credentials file is (a service-account key's path or name)
is a secret, and Google's clients and Airflow's Google hook put it in their errors
(``FileNotFoundError: ... '/var/secrets/sa.json'``, ``File /var/secrets/sa.json was not found``).
Pages, log lines and Slack messages show errors through :func:`error_line`."""

from __future__ import annotations

import os
import re

CREDENTIALS_FILE = "[credentials file]"
# A local path of a key file (the forms Google's tools write: JSON, P12, PEM); a URL or a
# ``gs://`` URI is no local path and stays.
_KEY_FILE = re.compile(r"""(?<![\w:/.~-])(?:~|[A-Za-z]:)?[/\\][^\s'"<>|]*\.(?:json|p12|pem|key)\b""",
                       re.IGNORECASE)
_NOT_FOUND = re.compile(r"\bFile \S+ was not found")


def redact(text: str) -> str:
    """``text`` without the credentials file's path or name: the one the environment names
    (GOOGLE_APPLICATION_CREDENTIALS), and any key-file path or name in it."""
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    for secret in filter(None, (named, os.path.dirname(named), os.path.basename(named))):
        if len(secret) > 1:
            text = text.replace(secret, CREDENTIALS_FILE)
    text = _NOT_FOUND.sub(f"File {CREDENTIALS_FILE} was not found", text)
    return _KEY_FILE.sub(CREDENTIALS_FILE, text)


def error_line(exc: BaseException, limit: int = 300) -> str:
    """``ExceptionType: first line of its message`` (at most ``limit`` characters of it), with
    no credentials file named. A file error says which call failed on what kind of file, never
    the file: its path is where a key may be."""
    if isinstance(exc, OSError) and (exc.filename or exc.filename2):
        return f"{type(exc).__name__}: {exc.strerror or 'file error'}: {CREDENTIALS_FILE}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {redact(lines[0])[:limit]}" if lines else type(exc).__name__
