"""The staff console (`ringback console`): the callback task queue as a web page.

A small aiohttp application of its own (not Faust's web server: it consumes nothing
through a consumer group and holds no table; it reads the tasks topic, the contract
the sinks write their task table to, and produces TaskUpdates, so any number of console
processes can run beside the workers). Routes (the JSON API is described in `openapi.yaml`):

    GET  /                           the page (static/index.html, console.js, console.css)
    POST /api/login                  practice + username + password → session cookie
    POST /api/logout
    GET  /api/session                who is signed in, the CSRF token, roles, outcomes
    GET  /api/tasks[?role=]          the practice's open tasks, most urgent first
    GET  /api/tasks/{task_id}
    POST /api/tasks/{task_id}/claim | /complete | /reassign
    GET  /api/events                 server-sent events: "tasks" whenever tasks or conversations change
    GET  /api/conversations          the practice's conversations (console/conversations.py)
    GET  /api/conversations/{id}     one caller's SMS both ways, missed calls, voicemails, case steps
    POST /api/conversations/{id}/reply   a staff reply: one SEND_SMS action (console/replies.py)
    GET  /healthz  /readyz  /metrics

Security: every /api route but login needs the session cookie; the practice always
comes from the session, never from the request, and a task of another practice is
answered exactly like a task that does not exist (404). Every POST needs a JSON body
(login, logout included), a same-origin `Origin` when the browser sends one, and,
once signed in, the session's CSRF token in `X-CSRF-Token`. No URL carries PHI (task
ids are `practice:hash:step`), and the access log shows method, path and status only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from ringback.clock import Clock
from ringback.config.proxies import parse_trusted, proxy_middlewares
from ringback.console import views
from ringback.console.conversations import Conversations
from ringback.console.replies import ReplyService, new_nonce
from ringback.console.revocations import SessionRevocations
from ringback.console.service import ChangeNotifier, ConsoleError, TaskService
from ringback.console.sessions import COOKIE, CSRF_HEADER, LoginThrottle, Session, SessionCodec, csrf_ok
from ringback.console.task_cache import TaskCache
from ringback.console.users import MAX_PASSWORD, PRACTICE_RE, User, UserStore
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import BrokerUnavailable

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"
MAX_BODY_BYTES = 16 * 1024
SSE_KEEPALIVE_S = 15.0
SSE_MAX_CLIENTS = 500

REQUESTS = Counter("ringback_console_requests_total", "Console HTTP requests by route and status", ["route", "status"])
UPDATES = Counter(
    "ringback_console_task_updates_total", "TaskUpdates sent (broker-acknowledged), by action", ["action"]
)
LOGINS = Counter("ringback_console_logins_total", "Console sign-ins by result", ["result"])
SSE_CLIENTS = Gauge("ringback_console_event_streams", "Open server-sent event streams")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


class Console:
    def __init__(
        self,
        service: TaskService,
        users: UserStore,
        sessions: SessionCodec,
        directory: PracticeDirectory | None = None,
        clock: Clock | None = None,
        cookie_secure: bool = False,
        throttle: LoginThrottle | None = None,
        client_throttle: LoginThrottle | None = None,
        ready: Callable[[], bool] | None = None,
        trusted_proxies: list[str] | None = None,
        replies: ReplyService | None = None,
    ) -> None:
        self.service = service
        self.replies = replies
        self.users = users
        self.sessions = sessions
        self.directory = directory
        self.clock = clock or Clock()
        self.cookie_secure = cookie_secure
        self.trusted_proxies = trusted_proxies or []  # config/proxies.py: scheme and client from the proxy
        # Failed sign-ins slow the next try down: per account at one client address from the 3rd
        # failure, and per address over all accounts from the 20th (a front desk's tablets may share
        # one address). Delays, never a lockout; per process (docs/console.md says why).
        self.throttle = throttle or LoginThrottle(delay_from=3, clock=self.clock.now)
        self.client_throttle = client_throttle or LoginThrottle(delay_from=20, clock=self.clock.now)
        self.ready = ready or (lambda: True)
        self.notifier = service.notifier
        self._streams = 0

    # ------------------------------------------------------------------ application
    def app(self) -> web.Application:
        middlewares = [*proxy_middlewares(self.trusted_proxies), self._middleware]
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
        r = app.router
        r.add_get("/", self.page, name="page")
        r.add_static("/static/", STATIC, name="static", append_version=False)
        r.add_post("/api/login", self.login, name="login")
        r.add_post("/api/logout", self._signed_in(self.logout, csrf=True), name="logout")
        r.add_get("/api/session", self._signed_in(self.session_info), name="session")
        r.add_get("/api/tasks", self._signed_in(self.list_tasks), name="tasks")
        r.add_get("/api/tasks/{task_id}", self._signed_in(self.get_task), name="task")
        for action in ("claim", "complete", "reassign"):
            r.add_post(
                f"/api/tasks/{{task_id}}/{action}", self._signed_in(self._task_update(action), csrf=True), name=action
            )
        r.add_get("/api/events", self._signed_in(self.events), name="events")
        r.add_get("/api/conversations", self._signed_in(self.list_conversations), name="conversations")
        r.add_get("/api/conversations/{conversation_id}", self._signed_in(self.get_conversation), name="conversation")
        r.add_post("/api/conversations/{conversation_id}/reply", self._signed_in(self.reply, csrf=True), name="reply")
        r.add_get("/api/openapi.yaml", self.openapi, name="openapi")
        r.add_get("/healthz", self.healthz, name="healthz")
        r.add_get("/readyz", self.readyz, name="readyz")
        r.add_get("/metrics", self.metrics, name="metrics")
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _startup(self, app: web.Application) -> None:
        self.notifier.bind(asyncio.get_running_loop())

    async def _shutdown(self, app: web.Application) -> None:
        self.notifier.close()  # ends the event streams

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        try:
            response = await handler(request)
        except ConsoleError as exc:
            response = _error(exc.status, exc.code, exc.message)
        except BrokerUnavailable as exc:
            log.warning("broker did not acknowledge a task update: %s", exc)
            response = _error(503, "unavailable", "the update was not stored; try again", {"Retry-After": "5"})
        except web.HTTPException as exc:
            if not request.path.startswith("/api/"):
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "bad_request")
            response = _error(exc.status, code, exc.reason)
        except Exception:
            log.exception("console error on %s", route)
            response = _error(500, "internal", "internal error")
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
            if request.path.startswith("/api/"):
                response.headers["Cache-Control"] = "no-store"
        REQUESTS.labels(route, str(response.status)).inc()
        return response

    # ------------------------------------------------------------------ session plumbing
    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE), self.users)

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """A browser's Origin (or, without one, Referer) must be this host; no header: not a browser."""
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if not origin:
            return True
        if origin == "null":
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:  # e.g. "http://[" : not a URL, so not this origin
            return False
        return parts.netloc == request.host and parts.scheme in ("http", "https")

    async def _json_body(self, request: web.Request) -> dict:
        if request.content_type != "application/json":
            raise ConsoleError(415, "content_type", "send application/json")
        try:
            body = json.loads(await request.read() or b"{}")
        except web.HTTPRequestEntityTooLarge:
            raise ConsoleError(413, "too_large", f"body over {MAX_BODY_BYTES} bytes") from None
        except RequestPayloadError:  # e.g. a Content-Encoding: gzip body that does not inflate
            raise ConsoleError(400, "bad_encoding", "the body could not be decoded") from None
        except (ValueError, UnicodeDecodeError):
            raise ConsoleError(400, "bad_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ConsoleError(400, "bad_json", "the body must be a JSON object")
        return body

    def _signed_in(
        self, handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]], csrf: bool = False
    ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                return _error(401, "unauthenticated", "sign in first")
            if csrf:
                if not self._same_origin(request):
                    return _error(403, "cross_origin", "cross-origin request refused")
                if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                    return _error(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
                if request.content_type != "application/json":
                    return _error(415, "content_type", "send application/json")
            return await handler(request, session)

        return wrapped

    def _set_cookie(self, response: web.StreamResponse, value: str, secure: bool) -> None:
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.sessions.max_age_s,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.cookie_secure or secure,
        )

    # ------------------------------------------------------------------ pages
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(OPENAPI, headers={"Content-Type": "application/yaml"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ------------------------------------------------------------------ API: sign in / out
    async def login(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            return _error(403, "cross_origin", "cross-origin request refused")
        body = await self._json_body(request)
        practice_id, username, password = (
            v if isinstance(v, str) else ""
            for v in (body.get("practice_id"), body.get("username"), body.get("password"))
        )
        if not (practice_id and username and password):
            return _error(400, "bad_request", "practice_id, username and password are required strings")
        practice_id, username = practice_id.strip().lower(), username.strip().lower()
        if len(practice_id) > 64 or len(username) > 64 or len(password) > MAX_PASSWORD:
            return _error(401, "invalid_credentials", "wrong practice, username or password")
        client = f"ip:{request.remote}"
        account = f"{practice_id}/{username}|{client}"  # the account at this address: a guesser elsewhere
        wait = max(self.throttle.retry_after(account), self.client_throttle.retry_after(client))
        if wait > 0:
            LOGINS.labels("throttled").inc()
            return _error(
                429,
                "too_many_attempts",
                "too many failed sign-ins; wait and try again",
                {"Retry-After": str(math.ceil(wait))},
            )
        # Argon2 takes tens of milliseconds: off the event loop.
        user = await asyncio.get_running_loop().run_in_executor(
            None, self.users.verify, practice_id, username, password
        )
        if user is None:
            self.throttle.failed(account)
            self.client_throttle.failed(client)
            LOGINS.labels("failed").inc()
            # What was typed is not logged unless it is a well-formed practice id (it could be anything).
            shown = practice_id if PRACTICE_RE.match(practice_id) else "(not a practice id)"
            log.info("console sign-in failed", extra={"practice_id": shown})
            return _error(401, "invalid_credentials", "wrong practice, username or password")
        self.throttle.succeeded(account)
        LOGINS.labels("ok").inc()
        log.info("console sign-in", extra={"practice_id": user.practice_id, "user": user.username})
        value, session = self.sessions.issue(user)
        response = web.json_response(self._session_body(session))
        self._set_cookie(response, value, request.secure)
        return response

    async def logout(self, request: web.Request, session: Session) -> web.Response:
        """Revoke the session for every replica; only once the broker has it is the cookie cleared
        (else 503 and the user is still signed in, and can try again)."""
        await self.sessions.revocations.revoke(session)
        log.info("console sign-out", extra={"practice_id": session.user.practice_id, "user": session.user.username})
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response

    def _practice_name(self, practice_id: str) -> str:
        practice = self.directory.by_id(practice_id) if self.directory else None
        return practice.name if practice else practice_id

    def _reassign_roles(self, practice_id: str) -> list[str]:
        practice = self.directory.by_id(practice_id) if self.directory else None
        return views.reassign_roles(practice.routing if practice else (), self.users.roles_of_practice(practice_id))

    def _session_body(self, session: Session) -> dict:
        user = session.user
        return {
            "practice_id": user.practice_id,
            "practice_name": self._practice_name(user.practice_id),
            "username": user.username,
            "roles": list(user.roles),
            "manager": views.is_manager(user),
            "csrf_token": session.csrf,
            "expires_at": int(session.expires_at * 1000),
            "outcomes": [{"value": k, "label": v} for k, v in views.OUTCOMES.items()],
            "roles_available": [
                {"value": r, "label": views.role_label(r)} for r in self._reassign_roles(user.practice_id)
            ],
            "server_time": self.clock.now_ms(),
        }

    async def session_info(self, request: web.Request, session: Session) -> web.Response:
        return web.json_response(self._session_body(session))

    # ------------------------------------------------------------------ API: tasks
    async def list_tasks(self, request: web.Request, session: Session) -> web.Response:
        role = request.query.get("role") or None
        if role is not None and len(role) > 64:
            return _error(400, "bad_request", "role too long")
        user = session.user
        version = self.notifier.version(user.practice_id)
        tasks = self.service.open_tasks(user.practice_id, role)
        return web.json_response(
            {
                "practice_id": user.practice_id,
                "server_time": self.clock.now_ms(),
                "version": version,
                "tasks": [self._task_view(t, user) for t in tasks],
            }
        )

    def _task_view(self, task: dict, user: User) -> dict:
        """The task's view, linking the caller's conversation when this console has it."""
        conversation_id = None
        conversations, caller = self._conversations, task.get("caller")
        if conversations is not None and caller:
            candidate = conversations.conversation_id(user.practice_id, caller)
            if conversations.caller(user.practice_id, candidate) is not None:
                conversation_id = candidate
        return views.task_view(task, user, conversation_id)

    @staticmethod
    def _task_id(request: web.Request) -> str:
        task_id = request.match_info["task_id"]
        if len(task_id) > 200:
            raise ConsoleError(404, "not_found", "no such task")
        return task_id

    async def get_task(self, request: web.Request, session: Session) -> web.Response:
        task = self.service.get(session.user.practice_id, self._task_id(request))
        if task is None:
            return _error(404, "not_found", "no such task")
        return web.json_response(self._task_view(task, session.user))

    def _task_update(self, action: str):
        async def handler(request: web.Request, session: Session) -> web.Response:
            task_id = self._task_id(request)
            body = await self._json_body(request)
            user = session.user
            outcome = body.get("outcome") if action == "complete" else None
            new_role = body.get("role") if action == "reassign" else None
            for value in (outcome, new_role):
                if value is not None and not isinstance(value, str):
                    raise ConsoleError(422, "bad_request", "outcome and role are strings")
            task = await self.service.update(
                user,
                task_id,
                action.upper(),
                outcome=outcome,
                new_role=new_role,
                allowed_roles=self._reassign_roles(user.practice_id),
            )
            UPDATES.labels(action.upper()).inc()
            return web.json_response({"task": self._task_view(task, user), "server_time": self.clock.now_ms()})

        return handler

    # ------------------------------------------------------------------ API: conversations
    # (A console built without a reply service, as in tests of the tasks alone, has no conversations.)
    @property
    def _conversations(self) -> Conversations | None:
        return self.replies.conversations if self.replies else None

    async def list_conversations(self, request: web.Request, session: Session) -> web.Response:
        practice = session.user.practice_id
        return web.json_response(
            {
                "practice_id": practice,
                "server_time": self.clock.now_ms(),
                "conversations": self._conversations.summaries(practice) if self._conversations else [],
            }
        )

    def _conversation(self, request: web.Request, session: Session) -> dict:
        conversations = self._conversations
        found = conversations and conversations.conversation(
            session.user.practice_id, request.match_info["conversation_id"]
        )
        if not found:
            raise ConsoleError(404, "not_found", "no such conversation")
        return found

    async def get_conversation(self, request: web.Request, session: Session) -> web.Response:
        # The nonce goes into the page's reply form: the reply it sends has one action id.
        return web.json_response({**self._conversation(request, session), "reply_nonce": new_nonce()})

    async def reply(self, request: web.Request, session: Session) -> web.Response:
        self._conversation(request, session)  # 404 before anything else for an id that is not the practice's
        assert self.replies is not None
        body = await self._json_body(request)
        action = await self.replies.reply(
            session.user, request.match_info["conversation_id"], body.get("body"), body.get("nonce")
        )
        return web.json_response(
            {
                "reply_id": action["action_id"],
                "conversation": self._conversation(request, session),
                "reply_nonce": new_nonce(),
                "server_time": self.clock.now_ms(),
            }
        )

    async def events(self, request: web.Request, session: Session) -> web.StreamResponse:
        """Server-sent events: `tasks` with the practice's version, at once and on every change."""
        if self._streams >= SSE_MAX_CLIENTS:
            return _error(503, "busy", "too many open event streams", {"Retry-After": "10"})
        practice = session.user.practice_id
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                **SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        self._streams += 1
        SSE_CLIENTS.inc()
        try:
            seen = self.notifier.version(practice)
            await response.write(f"retry: 3000\nevent: tasks\ndata: {json.dumps({'version': seen})}\n\n".encode())
            while not self.notifier.closing:
                changed = await self.notifier.wait(practice, seen, SSE_KEEPALIVE_S)
                if self.notifier.closing or self._session(request) is None:
                    break  # shutting down, or the account changed / the session expired
                if changed:
                    await asyncio.sleep(0.05)  # coalesce a burst of task records into one event
                    seen = self.notifier.version(practice)
                    await response.write(f"event: tasks\ndata: {json.dumps({'version': seen})}\n\n".encode())
                else:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams -= 1
            SSE_CLIENTS.dec()
        return response


class AccessLogger(AbstractAccessLogger):
    """Method, path, status and time: never the query string, the referrer or the cookies."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.rel_url.path, response.status, elapsed * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def run(env, host: str = "0.0.0.0", port: int = 8081) -> None:
    """`ringback console`: follow the task table and the practices, serve the page and the API."""
    from ringback.console.sessions import session_key
    from ringback.console.users import users_path
    from ringback.kafka import admin, topics
    from ringback.kafka.connection import client_config
    from ringback.kafka.producer import AckedProducer

    admin.ensure_topics(env, topics.CONSOLE)  # and its principal may read and write what it does
    notifier = ChangeNotifier()
    board = TaskCache(env, on_change=notifier.bump).follow()  # the tasks topic
    directory = PracticeDirectory().follow(env)
    producer = AckedProducer(client_config(env), timeout_s=env.ringback_console_ack_timeout_s)
    key, key_source = session_key(env)
    users = UserStore(users_path(env))
    clock = Clock()
    revocations = SessionRevocations(env, producer, clock, on_revoke=notifier.bump).follow()
    service = TaskService(board, producer, topics.topic_name(topics.TASK_UPDATES, env), clock, notifier)
    conversations = Conversations(env, key, on_change=notifier.bump).follow()  # calls, SMS, actions, outcomes
    replies = ReplyService(conversations, producer, topics.topic_name(topics.ACTIONS, env), clock, notifier)
    delays = {
        "first_delay_s": env.ringback_console_login_delay_s,
        "max_delay_s": env.ringback_console_login_max_delay_s,
    }
    console = Console(
        service,
        users,
        SessionCodec(key, env.ringback_console_session_s, clock=clock, revocations=revocations),
        directory=directory,
        clock=clock,
        cookie_secure=env.ringback_console_cookie_secure,
        throttle=LoginThrottle(delay_from=3, clock=clock.now, **delays),
        client_throttle=LoginThrottle(delay_from=20, clock=clock.now, **delays),
        trusted_proxies=parse_trusted(env.ringback_trusted_proxies),
        ready=lambda: board.ready() and directory.ready and conversations.ready() and revocations.ready(),
        replies=replies,
    )
    log.info("console: %d user accounts in %s; session key from %s", len(users.list()), users.path, key_source)
    if not users.list():
        log.warning("console: no user accounts yet; add one with `ringback console add-user`")
    try:
        web.run_app(
            console.app(),
            host=host,
            port=port,
            access_log=logging.getLogger("ringback.console.access"),
            access_log_class=AccessLogger,
            print=None,
            shutdown_timeout=5,
        )
    finally:
        board.close()
        conversations.close()
        directory.close()
        revocations.close()
        producer.close()
