"""A real local HTTP server that stands in for Twilio's Messages API and Slack's incoming
webhooks: it records every request and answers like the API it stands in for, after
the time a real API takes.

The demo and the benchmark use it so nothing leaves the machine; tests use it to count
requests exactly. The Twilio contract itself is checked against Prism in the sink tests.

Latency: Twilio's Messages create and every other POST (a Slack webhook) are answered
after `latency_s` (default 250 ms, what Twilio's Messages API takes), jittered uniformly
by ±`jitter` of it (default ±50 %: 125-375 ms), drawn from a random generator seeded by
`seed` so runs are comparable. `latency_s=0` answers at once. Requests are served on a
thread each, so concurrent requests wait concurrently, as at the real APIs.

Twilio (paths under /2010-04-01/Accounts/{AccountSid}/, as in Twilio's OpenAPI description):
- POST Messages.json creates a message (status `queued`, no `date_sent`) before waiting,
  so a client that gives up meanwhile cannot know it went out; when the answer (201)
  goes out the message is `sent` with its `date_sent`. Missing To / Body / From (or
  MessagingServiceSid) → 400 with Twilio's error codes.
- GET Messages.json lists them newest first, filtered by To, From and DateSent (`DateSent`:
  that day; `DateSent>` / `DateSent<`: on or after / on or before, a date or a time),
  paged by PageSize (default 50, at most 1000) and Page / PageToken, with the paging
  fields Twilio answers (page, page_size, start, end, uri, first/next/previous_page_uri).
- GET Messages/{Sid}.json fetches one.
Errors are Twilio's JSON: code, message, more_info, status.

Failure scripts (for retry tests): `script` lists what the next Messages POSTs get
instead of the normal answer, one entry per request: an HTTP status (`500`, `429`), a
`(status, {header: value})` pair, or `("hang", seconds)` - the message is created
(as Twilio would) but the answer comes only after `seconds`. `other_script` does the
same for every other POST (a Slack webhook).
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

LATENCY_S = 0.25  # Twilio's Messages API answers in a few hundred milliseconds
JITTER = 0.5  # ± this share of the latency, uniformly
SEED = 14

ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC[0-9a-zA-Z]+)/(?P<rest>.*)$")
MESSAGE_PATH = re.compile(r"^Messages/(?P<sid>(SM|MM)[0-9a-fA-F]{32})\.json$")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


@dataclass
class Captured:
    method: str
    path: str
    headers: dict
    form: dict
    body: bytes
    received_at: float = 0.0  # time.time() when the request line and headers were read (latency benchmarks)


def twilio_error(status: int, code: int, message: str) -> dict:
    """An error body as Twilio's REST API answers it."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def _rfc2822(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC))  # "Fri, 24 May 2019 17:44:46 +0000", as Twilio writes it


def parse_date_sent(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value → (UTC time, whether it named a whole day). Twilio accepts
    YYYY-MM-DD and several time formats (ISO 8601, "YYYY-MM-DD hh:mm:ss", RFC 2822)."""
    value = value.strip()
    try:
        day = date.fromisoformat(value)
        return datetime(day.year, day.month, day.day, tzinfo=UTC), True
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise ValueError(f"cannot read DateSent {value!r}") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC), False


def _sent_matches(sent: datetime | None, filters: dict[str, str]) -> bool:
    """Whether a message's date_sent passes the DateSent filters (a message not sent yet never does)."""
    for name, op in (("DateSent", "="), ("DateSent>", ">="), ("DateSent<", "<=")):
        if name not in filters:
            continue
        if sent is None:
            return False
        at, whole_day = parse_date_sent(filters[name])
        end = at + timedelta(days=1) if whole_day else at
        if op == "=" and sent.date() != at.date():  # that (UTC) day
            return False
        if op == ">=" and sent < at:
            return False
        if op == "<=" and (sent >= end if whole_day else sent > at):
            return False
    return True


def list_page(messages: list[dict], query: dict[str, str], path: str) -> dict:
    """A page of Twilio's Messages list: `messages` in creation order (the newest is listed
    first), `query` the request's parameters. Raises ValueError for a bad parameter."""
    page_size = int(query.get("PageSize") or DEFAULT_PAGE_SIZE)
    page = int(query.get("Page") or 0)
    if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
        raise ValueError("PageSize must be 1-1000 and Page at least 0")
    found = [
        m
        for m in reversed(messages)
        if m["to"] == query.get("To", m["to"])
        and m["from"] == query.get("From", m["from"])
        and _sent_matches(_sent_at(m), query)
    ]
    start = page * page_size
    items = found[start : start + page_size]
    filters = {k: v for k, v in query.items() if k in ("To", "From", "DateSent", "DateSent>", "DateSent<")}

    def uri(n: int, token: str | None = None) -> str:
        params = {**filters, "PageSize": page_size, "Page": n, **({"PageToken": token} if token else {})}
        return f"{path}?{urlencode(params)}"

    more = start + page_size < len(found)
    return {
        "messages": items,
        "page": page,
        "page_size": page_size,
        "start": start,
        "end": start + max(len(items) - 1, 0),
        "uri": uri(page, query.get("PageToken")),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, "PA" + items[-1]["sid"]) if more else None,
        "previous_page_uri": uri(page - 1, "PB" + items[0]["sid"]) if page > 0 and items else None,
    }


def _sent_at(message: dict) -> datetime | None:
    return parsedate_to_datetime(message["date_sent"]) if message.get("date_sent") else None


class Latency:
    """Answer delays: uniform in latency ± jitter × latency, seeded, safe across threads."""

    def __init__(self, latency_s: float, jitter: float, seed: int) -> None:
        self.latency_s, self.jitter = latency_s, jitter
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def next(self) -> float:
        if self.latency_s <= 0:
            return 0.0
        with self._lock:
            return self.latency_s * (1 + self.jitter * (2 * self._rng.random() - 1))


class _QuietServer(ThreadingHTTPServer):
    """A client that drops its connection (a killed sink process) is what the real APIs
    see too: not an error worth a traceback. Anything else is still printed."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class FakeApiServer:
    requests: list[Captured] = field(default_factory=list)
    script: list = field(default_factory=list)  # next Messages POSTs: status, (status, headers), ("hang", s)
    other_script: list = field(default_factory=list)  # the same for every other POST
    created: list[dict] = field(default_factory=list)  # message resources created, oldest first
    # HTTP/1.1 keep-alive, as the real APIs: clients reuse their connections (the latency
    # benchmark). Off by default: HTTP/1.0, one connection per request.
    keep_alive: bool = False
    latency_s: float = LATENCY_S  # mean answer delay of every POST; 0 answers at once
    jitter: float = JITTER
    seed: int = SEED

    def __post_init__(self) -> None:
        captured = self.requests
        lock = threading.Lock()
        server = self
        delays = Latency(self.latency_s, self.jitter, self.seed)

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

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._answer(status, json.dumps(payload).encode(), "application/json", headers)

            def _error(self, status: int, code: int, message: str, headers: dict | None = None) -> None:
                self._json(status, twilio_error(status, code, message), headers)

            def _not_found(self) -> None:
                self._error(404, 20404, f"The requested resource {urlsplit(self.path).path} was not found")

            def _scripted(self, script: list) -> tuple[int | None, dict, float | None]:
                """(status or None for the normal answer, extra headers, delay or None for the latency)."""
                with lock:
                    step = script.pop(0) if script else None
                if step is None:
                    return None, {}, None
                if isinstance(step, tuple) and step[0] == "hang":
                    return None, {}, float(step[1])
                if isinstance(step, tuple):
                    return int(step[0]), dict(step[1]), None
                return int(step), {}, None

            def do_GET(self) -> None:
                arrived = time.time()
                with lock:
                    captured.append(Captured("GET", self.path, dict(self.headers), {}, b"", arrived))
                url = urlsplit(self.path)
                account = ACCOUNT_PATH.match(url.path)
                if account is None:
                    self._not_found()
                    return
                rest = account["rest"]
                if rest == "Messages.json":
                    try:
                        with lock:
                            page = list_page(list(server.created), dict(parse_qsl(url.query)), url.path)
                    except ValueError as exc:
                        self._error(400, 20001, str(exc))
                        return
                    self._json(200, page)
                    return
                one = MESSAGE_PATH.match(rest)
                with lock:
                    found = next((dict(m) for m in server.created if one and m["sid"] == one["sid"]), None)
                if found is None:
                    self._not_found()
                    return
                self._json(200, found)

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(parse_qsl(body.decode(errors="replace")))
                with lock:
                    captured.append(Captured("POST", self.path, dict(self.headers), form, body, arrived))
                account = ACCOUNT_PATH.match(urlsplit(self.path).path)
                is_message = account is not None and account["rest"] == "Messages.json"
                status, extra, hang = self._scripted(server.script if is_message else server.other_script)
                delay = delays.next() if hang is None else hang
                if status is not None:  # refused: nothing created
                    time.sleep(delay)
                    self._error(status, 20000 + status, HTTPStatus(status).phrase, extra)
                    return
                if account is None:  # a Slack webhook
                    time.sleep(delay)
                    self._answer(200, b"ok", "text/plain")
                    return
                if not is_message:
                    self._not_found()
                    return
                invalid = _invalid(form)
                if invalid:
                    time.sleep(delay)
                    self._error(400, *invalid)
                    return
                message = _message(account["account"], form)
                with lock:
                    server.created.append(message)  # created before any answer, as at Twilio
                time.sleep(delay)
                answer = dict(message)
                with lock:  # out to the carrier by the time the answer leaves
                    now = _rfc2822(datetime.now(UTC))
                    message.update(status="sent", date_sent=now, date_updated=now)
                self._json(201, answer)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
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


def _invalid(form: dict) -> tuple[int, str] | None:
    """Twilio's error (code, message) for a Messages create it would refuse, or None."""
    if not form.get("To"):
        return 21604, "A 'To' phone number is required."
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
        return 21602, "Message body is required."
    return None


def _message(account: str, form: dict) -> dict:
    """A new message resource, as Twilio answers a create."""
    sid = "SM" + uuid.uuid4().hex
    now = _rfc2822(datetime.now(UTC))
    uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}"
    return {
        "account_sid": account,
        "api_version": "2010-04-01",
        "body": form.get("Body"),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": form.get("To"),
        "uri": f"{uri}.json",
    }
