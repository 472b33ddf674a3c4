"""Google API endpoints in an outage, on loopback, stdlib only: :func:`unavailable` answers every
request 503 with BigQuery's error body (down for good); :func:`flaky` is down for a while (503s
or dropped connections), then proxies to an emulator. For tests of what a step and its task do
when BigQuery or Cloud Storage is down; shared by the trainer's and the DAGs' tests.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps({"error": {"code": 503, "message": "The service is currently unavailable.",
                                     "errors": [{"reason": "backendError"}]}}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def unavailable() -> Iterator[str]:
    """Serve the outage on a free loopback port; yields its URL (an ``*_EMULATOR_HOST`` value)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503s or dropped connections for the first ``outage_s`` seconds after the first request,
    then a transparent proxy to ``upstream``."""

    protocol_version = "HTTP/1.1"
    upstream: str
    outage_s: float
    mode: str
    state: dict

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.state["lock"]:
            self.state["first"] = self.state["first"] or time.monotonic()
            down = time.monotonic() - self.state["first"] < self.outage_s
            self.state["failed" if down else "passed"] += 1
        if down and self.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no status line: a dropped connection
            return
        if down:
            _Unavailable._answer(self)
            return
        host, port = self.upstream.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def flaky(upstream: str, outage_s: float, mode: str = "503") -> Iterator[tuple[str, dict]]:
    """An endpoint in front of ``upstream`` (an emulator URL) that is down for ``outage_s``
    seconds from its first request, answering 503 (``mode="503"``) or dropping connections
    (``"drop"``), then passes everything through. Yields its URL and counters (requests
    ``failed`` during the outage and ``passed`` after it)."""
    if mode not in ("503", "drop"):
        raise ValueError(f"mode must be 503 or drop, got {mode!r}")
    state = {"lock": threading.Lock(), "first": None, "failed": 0, "passed": 0}
    handler = type("Flaky", (_Flaky,), {"upstream": upstream, "outage_s": outage_s, "mode": mode,
                                        "state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
