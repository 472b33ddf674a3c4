"""A Google API endpoint in an outage: every request answered 503 with BigQuery's error body.

Stdlib only, on loopback, for tests of what a step and its task do when BigQuery is down (the
trainer's exit code 75, Airflow's retry); shared by the trainer's and the DAGs' tests.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
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
