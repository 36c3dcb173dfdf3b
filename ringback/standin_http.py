"""A real local HTTP server that records what it receives and answers like the API it
stands in for (Twilio Messages: 201 with a message resource; anything else: 200 ok).

The demo uses it so nothing leaves the machine; tests use it to count requests
exactly. The Twilio contract itself is checked against Prism in the sink tests.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Captured:
    method: str
    path: str
    headers: dict
    form: dict
    body: bytes


@dataclass
class CaptureServer:
    requests: list[Captured] = field(default_factory=list)

    def __post_init__(self) -> None:
        captured = self.requests
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
                with lock:
                    captured.append(Captured("POST", self.path, dict(self.headers), form, body))
                if self.path.endswith("/Messages.json"):
                    sid = "SM" + uuid.uuid4().hex
                    payload = {"sid": sid, "status": "queued", "to": form.get("To"),
                               "from": form.get("From"), "body": form.get("Body"),
                               "account_sid": self.path.split("/")[3], "num_segments": "1",
                               "direction": "outbound-api", "api_version": "2010-04-01"}
                    data = json.dumps(payload).encode()
                    self.send_response(201)
                    self.send_header("Content-Type", "application/json")
                else:
                    data = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def messages(self) -> list[Captured]:
        return [r for r in list(self.requests) if r.path.endswith("/Messages.json")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
