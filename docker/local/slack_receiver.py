"""A loopback stand-in for Slack incoming webhooks: prints each message and appends it as one
JSON line to a file. For `make demo` and `make up`; point the Airflow connection at it:

    AIRFLOW_CONN_SLACK_RECSYS='{"conn_type": "slackwebhook", "host": "http://127.0.0.1:PORT",
                                "password": "/services/local/demo/token"}'
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside a container")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file of received messages")
    args = parser.parse_args()
    out = args.out

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with out.open("a") as fh:
                fh.write(json.dumps({"text": body.get("text", "")}) + "\n")
            print(f"[slack] {body.get('text', '')}", flush=True)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"slack receiver on http://{args.host}:{args.port}, writing {out}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
