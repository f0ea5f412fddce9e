"""Connections that cannot starve the socket: uvicorn waits forever for a request that arrives a
byte at a time (slowloris), and past `limit_concurrency` open connections it answers everyone
503. So a request's headers must arrive within `header_timeout_s` (else 408), its body may not
pause longer than that (else the connection is dropped), and one uid may hold at most
`max_connections_per_uid` connections (root and the daemon's own user are exempt); more are
answered 429 at once and closed."""

import asyncio
import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from pi_render.api.peercred import PeerCredProtocol

log = logging.getLogger(__name__)


class ConnectionGuard:
    """The limits, and the open connections per uid (shared by every connection's protocol)."""

    def __init__(self, header_timeout_s: float, max_per_uid: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_per_uid = max_per_uid
        self.open: Counter[int] = Counter()
        self.exempt = {0, os.getuid()}

    def protocol(self) -> Any:
        """The protocol factory for uvicorn's `http` setting."""
        return functools.partial(GuardedProtocol, guard=self)


class GuardedProtocol(PeerCredProtocol):
    """PeerCredProtocol with a deadline for each request's headers and a per-uid cap."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._uid: int | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        uid = self._peercred["uid"] if self._peercred else None
        guard = self._guard
        if uid is not None and uid not in guard.exempt and guard.open[uid] >= guard.max_per_uid:
            log.warning("connection refused: too many open", extra={"uid": uid})
            self._refuse(f"uid {uid} already has {guard.open[uid]} connections open "
                         f"(max_connections_per_uid = {guard.max_per_uid}); close some",
                         "429 Too Many Requests", "TooManyConnections")  # fmt: skip
            return
        if uid is not None:
            self._uid = uid
            guard.open[uid] += 1
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._uid is not None:
            self._guard.open[self._uid] -= 1
            if self._guard.open[self._uid] <= 0:
                del self._guard.open[self._uid]
            self._uid = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()  # the next request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self._body_too_slow)  # the body must keep coming (none: disarmed at once)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._disarm()
        self._arm(self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, expire: Callable[[], None] | None = None) -> None:
        self._deadline = self.loop.call_later(self._guard.header_timeout_s,
                                              expire or self._too_slow)  # fmt: skip

    def _body_too_slow(self) -> None:
        """No body bytes for `header_timeout_s`: the request is dropped (its handler sees a
        disconnect). Not while the app is the slow one (reading paused by flow control)."""
        self._deadline = None
        if self.flow.read_paused:
            self._arm(self._body_too_slow)
            return
        if not self.transport.is_closing():
            log.warning("connection closed: request body too slow", extra={"uid": self._uid})
            self.transport.close()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request crawls in behind one being answered
            return
        if not self.transport.is_closing():
            log.warning("connection closed: request headers too slow", extra={"uid": self._uid})
            self._refuse(f"the request's headers did not arrive within "
                         f"{self._guard.header_timeout_s:g}s", "408 Request Timeout",
                         "RequestTimeout")  # fmt: skip

    def _refuse(self, message: str, status: str, kind: str) -> None:
        """Answer in the API's error shape and hang up (no request cycle exists yet)."""
        body = json.dumps({"error": kind, "message": message})
        self.transport.write(
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}".encode()
        )
        self.transport.close()
