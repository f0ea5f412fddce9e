"""What keeps the dashboard safe on a shared machine (pure ASGI middleware; before it, a
connection from another local uid is closed as it is accepted: web/peer.py, web/serve.py):

- a request whose `Host` is not the address served is refused (DNS rebinding);
- a foreign `Origin` is refused;
- everything but `/login` needs the session cookie, which only the one-time link printed at
  start can set (`HttpOnly; SameSite=Strict`); `/metrics` takes a bearer token instead;
- a state-changing request needs the session's CSRF token (form field `csrf` or header
  `X-CSRF-Token`);
- a session lasts `lifetime_s` (12 h by default) and ends sooner at `POST /logout`; SIGUSR1
  arms a fresh one-time link (see web/serve.py);
- a request body must say its length, and no more than `max_body` (refused before it is read).
"""

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

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
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.login_token = token
        return token


class Guard:
    def __init__(self, app: Any, sessions: Sessions, hosts: set[str], max_body: int) -> None:
        self.app, self.sessions, self.hosts, self.max_body = app, sessions, hosts, max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
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
        session, csrf = None, None
        for value in _cookies(headers.get("cookie", ""), COOKIE):  # another port's page may
            csrf = self.sessions.csrf_of(value)  # set one of the same name: any live one counts
            if csrf is not None:
                session = value
                break
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
            length = headers.get("content-length", "")
            if "transfer-encoding" in headers or not length.isdigit():
                await _refuse(send, 411, "a request body must say its length")
                return
            if int(length) > self.max_body:
                await _refuse(send, 413, f"larger than the {self.max_body:,} bytes allowed")
                return
        await self.app(scope, receive, send)


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


def _cookies(header: str, name: str) -> list[str]:
    """Every value the header gives `name` (a browser sends all that match, most specific
    path first)."""
    found = []
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            found.append(value)
    return found


def _query(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


async def _refuse(send: Any, status: int, message: str) -> None:
    body = message.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
