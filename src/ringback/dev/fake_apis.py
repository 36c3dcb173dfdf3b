"""A real local HTTP server that records what it receives and answers like the API it
stands in for (Twilio Messages: 201 with a message resource; anything else: 200 ok).

The demo uses it so nothing leaves the machine; tests use it to count requests
exactly. The Twilio contract itself is checked against Prism in the sink tests.

Failure scripts (for retry tests): `script` lists what the next Messages POSTs get
instead of a 201, one entry per request: an HTTP status (`500`, `429`), a
`(status, {header: value})` pair, or `("hang", seconds)` - the message is created
(as Twilio would) but the answer comes only after `seconds`, so a client with a
shorter timeout cannot know it went out. `other_script` does the same for every
other POST (a Slack webhook). GET of Messages.json lists the messages created so
far, filtered by To/From like Twilio's Messages list, for idempotent look-ups.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Captured:
    method: str
    path: str
    headers: dict
    form: dict
    body: bytes
    received_at: float = 0.0  # time.time() when the request line and headers were read (latency benchmarks)


@dataclass
class FakeApiServer:
    requests: list[Captured] = field(default_factory=list)
    script: list = field(default_factory=list)  # next Messages POSTs: status, (status, headers), ("hang", s)
    other_script: list = field(default_factory=list)  # the same for every other POST
    created: list[dict] = field(default_factory=list)  # message resources created (GET lists them)
    # HTTP/1.1 keep-alive, as the real APIs: clients reuse their connections (the latency
    # benchmark). Off by default: HTTP/1.0, one connection per request.
    keep_alive: bool = False

    def __post_init__(self) -> None:
        captured = self.requests
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if server.keep_alive else "HTTP/1.0"
            # Headers and body go out in two writes: without TCP_NODELAY a kept-alive
            # connection waits for the client's delayed ACK (~40 ms) before the body.
            disable_nagle_algorithm = server.keep_alive

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _answer(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    for name, value in (headers or {}).items():
                        self.send_header(name, str(value))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout) or was killed
                    pass

            def _scripted(self, script: list) -> tuple[int | None, dict, float]:
                """(status or None for the normal answer, extra headers, delay) of this request."""
                with lock:
                    step = script.pop(0) if script else None
                if step is None:
                    return None, {}, 0.0
                if isinstance(step, tuple) and step[0] == "hang":
                    return None, {}, float(step[1])
                if isinstance(step, tuple):
                    return int(step[0]), dict(step[1]), 0.0
                return int(step), {}, 0.0

            def do_GET(self) -> None:
                arrived = time.time()
                url = urlsplit(self.path)
                with lock:
                    captured.append(Captured("GET", self.path, dict(self.headers), {}, b"", arrived))
                if not url.path.endswith("/Messages.json"):
                    self._answer(404, b'{"status": 404}', "application/json")
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with lock:
                    found = [
                        m
                        for m in reversed(server.created)  # newest first, like Twilio
                        if m["to"] == query.get("To", m["to"]) and m["from"] == query.get("From", m["from"])
                    ]
                payload = {
                    "messages": found,
                    "page": 0,
                    "page_size": 50,
                    "start": 0,
                    "end": len(found),
                    "uri": url.path,
                    "first_page_uri": url.path,
                    "next_page_uri": None,
                    "previous_page_uri": None,
                }
                self._answer(200, json.dumps(payload).encode(), "application/json")

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
                with lock:
                    captured.append(Captured("POST", self.path, dict(self.headers), form, body, arrived))
                is_message = self.path.endswith("/Messages.json")
                status, extra, delay = self._scripted(server.script if is_message else server.other_script)
                if status is not None:
                    error = {
                        "code": 20000 + status,
                        "message": f"scripted {status}",
                        "status": status,
                        "more_info": "https://www.twilio.com/docs/errors",
                    }
                    self._answer(status, json.dumps(error).encode(), "application/json", extra)
                    return
                if is_message:
                    sid = "SM" + uuid.uuid4().hex
                    now = formatdate(usegmt=False)
                    payload = {
                        "sid": sid,
                        "status": "queued",
                        "to": form.get("To"),
                        "from": form.get("From"),
                        "body": form.get("Body"),
                        "messaging_service_sid": form.get("MessagingServiceSid"),
                        "account_sid": self.path.split("/")[3],
                        "num_segments": "1",
                        "direction": "outbound-api",
                        "api_version": "2010-04-01",
                        "date_created": now,
                        "date_sent": now,
                        "date_updated": now,
                    }
                    with lock:
                        server.created.append(payload)  # created before any answer, as at Twilio
                    if delay:
                        time.sleep(delay)
                    self._answer(201, json.dumps(payload).encode(), "application/json")
                    return
                if delay:
                    time.sleep(delay)
                self._answer(200, b"ok", "text/plain")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def messages(self) -> list[Captured]:
        """The Messages POSTs received (every attempt, answered or not)."""
        return [r for r in list(self.requests) if r.method == "POST" and r.path.endswith("/Messages.json")]

    def posts(self, path: str) -> list[Captured]:
        """The POSTs received on one path (a Slack webhook, say)."""
        return [r for r in list(self.requests) if r.method == "POST" and r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
