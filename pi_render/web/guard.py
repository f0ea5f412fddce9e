"""What keeps the dashboard safe on a shared machine (pure ASGI middleware):

- on loopback, a connection from another uid's socket is refused (cookies reach every port);
- a request whose `Host` is not the address served is refused (DNS rebinding);
- a foreign `Origin` is refused;
- everything but `/login` needs the session cookie, which only the one-time link printed at
  start can set (`HttpOnly; SameSite=Strict`); `/metrics` takes a bearer token instead;
- a state-changing request needs the session's CSRF token (form field `csrf` or header
  `X-CSRF-Token`);
- a session lasts `lifetime_s` (12 h by default) and ends sooner at `POST /logout`; SIGUSR1
  arms a fresh one-time link (see web/serve.py).
"""

import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from pi_render.web.peer import loopback_peer_uid

COOKIE = "pi_render_session"
SAFE = ("GET", "HEAD")
SAFETY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form POSTs say "Origin: null"
]


SESSION_LIFETIME_S = 12 * 3600


class Sessions:
    """The one-time login token, the sessions it opened, and each one's CSRF token and end.

    A session ends `lifetime_s` after its login (a cookie left in a browser on a shared desk
    does not open the dashboard next week); `clock` is injectable for tests."""

    def __init__(self, lifetime_s: float = SESSION_LIFETIME_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.login_token: str | None = secrets.token_urlsafe(32)
        self.metrics_token = secrets.token_urlsafe(32)
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._open: dict[str, tuple[str, float]] = {}  # session id → (CSRF token, ends at)
        self._lock = threading.Lock()

    def log_in(self, token: str) -> str | None:
        """A session id for the one-time token (once: the token is then spent)."""
        with self._lock:
            if self.login_token is None or not same(token, self.login_token):
                return None
            self.login_token = None
            session = secrets.token_urlsafe(32)
            self._open[session] = (secrets.token_urlsafe(32), self._clock() + self.lifetime_s)
            return session

    def csrf_of(self, session: str | None) -> str | None:
        """The session's CSRF token while it lasts; None for an unknown or ended session."""
        with self._lock:
            found = self._open.get(session or "")
            if found is None:
                return None
            if self._clock() >= found[1]:
                del self._open[session or ""]
                return None
            return found[0]

    def log_out(self, session: str) -> None:
        with self._lock:
            self._open.pop(session, None)

    def new_login_token(self) -> str:
        """Arm a fresh one-time token (the previous one, if unspent, stops working)."""
        with self._lock:
            self.login_token = secrets.token_urlsafe(32)
            return self.login_token


class Guard:
    def __init__(self, app: Any, sessions: Sessions, hosts: set[str],
                 check_peer: bool = True) -> None:  # fmt: skip
        self.app, self.sessions, self.hosts = app, sessions, hosts
        self.check_peer = check_peer  # off only for in-process tests (no socket to look up)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._same_user(scope):
            await _refuse(send, 403, "this dashboard serves only the user who started it")
            return
        send = _with_safety_headers(send)
        host = headers.get("host", "")
        if host not in self.hosts:
            await _refuse(send, 421, "this dashboard answers only to its own address")
            return
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in self.hosts}:
            await _refuse(send, 403, "a foreign origin may not use this dashboard")
            return
        path, method = scope["path"], scope["method"]
        if (path == "/login" and method == "GET") or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        if path == "/metrics":
            bearer = headers.get("authorization", "")
            expected = f"Bearer {self.sessions.metrics_token}"
            if not same(bearer, expected):
                await _refuse(send, 401, "a bearer token is needed (printed at start)")
                return
            await self.app(scope, receive, send)
            return
        session = _cookie(headers.get("cookie", ""), COOKIE)
        csrf = self.sessions.csrf_of(session)
        if csrf is None:
            hours = self.sessions.lifetime_s / 3600
            await _refuse(
                send,
                401,
                f"log in through the link pi-render web printed (a session "
                f"lasts {hours:g} h; `kill -USR1` pi-render web for a new link)",
            )
            return
        scope.setdefault("state", {}).update(csrf=csrf, session=session)
        if method not in SAFE:
            given = headers.get("x-csrf-token") or _query(scope, "csrf")
            if given is None or not same(given, csrf):
                await _refuse(send, 403, "missing or wrong CSRF token")
                return
        await self.app(scope, receive, send)

    def _same_user(self, scope: dict[str, Any]) -> bool:
        """On loopback, the client's socket must be this process's uid or root's (see
        web/peer.py; root can read this process's memory and cookie jar anyway)."""
        client, server = scope.get("client"), scope.get("server")
        if not client or not server or not self.check_peer:
            return True
        if client[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            return True  # bound off loopback on purpose: the network and the token decide
        return loopback_peer_uid(int(client[1]), int(server[1])) in (os.getuid(), 0)


def _with_safety_headers(send: Any) -> Any:
    """No framing (clickjacking), no sniffing, no Referer to other sites (tokens live in form
    URLs)."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *SAFETY_HEADERS]
        await send(message)

    return wrapped


def same(given: str, expected: str) -> bool:
    """A constant-time comparison that any text may reach (compare_digest refuses non-ASCII
    str, and a header or query can carry anything)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _query(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


async def _refuse(send: Any, status: int, message: str) -> None:
    body = message.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
