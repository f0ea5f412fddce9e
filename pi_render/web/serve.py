"""Run the dashboard: follow the daemon's event stream once (a thread that reconnects and
resumes), print the one-time login link, and serve on loopback unless told otherwise."""

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pi_render.api.events import EventLog
from pi_render.web.guard import Sessions
from pi_render.web.peer import allowed, is_loopback
from pi_render.web.thumbs import warm_up

log = logging.getLogger(__name__)


def follow_daemon(socket: Path, events: EventLog, stop: threading.Event) -> None:
    """Re-publish the daemon's events here, resuming with Last-Event-ID after a drop."""
    last: str | None = None
    transport = httpx.HTTPTransport(uds=str(socket))
    while not stop.is_set():
        try:
            with httpx.Client(transport=transport, base_url="http://pi-render",
                              timeout=httpx.Timeout(30, read=60)) as client:  # fmt: skip
                headers = {"Last-Event-ID": last} if last else {}
                with client.stream("GET", "/events", headers=headers) as response:
                    fields: dict[str, str] = {}
                    for line in response.iter_lines():
                        if stop.is_set():
                            return
                        if line == "" and "data" in fields:
                            last = fields.get("id", last)
                            data: dict[str, Any] = json.loads(fields["data"])
                            events.publish(fields.get("event", "message"), data)
                            fields = {}
                        elif line and not line.startswith(":"):
                            name, _, value = line.partition(": ")
                            fields[name] = value
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.warning("lost the daemon's event stream (reconnecting): %s", exc)
        stop.wait(1.0)


def listen(host: str, port: int) -> socket.socket:
    """Bind before the link is printed: a browser that follows it at once is queued, not
    refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class RefusalLog:
    """Refused connections, said at most once a minute with a count: another user's connect
    loop must not flood the log, nor block the event loop on a full stderr."""

    def __init__(self) -> None:
        self.count, self.said_at = 0, 0.0

    def refused(self, client: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.said_at >= 60.0:
            log.warning("refused %d connection(s) from another local user (latest %s)",
                        self.count, client)  # fmt: skip
            self.count, self.said_at = 0, now


def guarded_protocol(bound_to_loopback: bool) -> type:
    """uvicorn's HTTP protocol, closing a connection from another local uid the moment it is
    accepted (web/peer.py): no request of theirs is read, however slowly they send it."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    refusals = RefusalLog()

    class Guarded(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            client = transport.get_extra_info("peername")
            server = transport.get_extra_info("sockname")
            if not allowed(client and tuple(client[:2]), server and tuple(server[:2]),
                           bound_to_loopback):  # fmt: skip
                refusals.refused(client)
                transport.abort()

    return Guarded


def relay_fresh_links(sessions: Sessions, announce: Callable[[str], None]) -> None:
    """SIGUSR1 arms a fresh one-time link. The handler only writes a byte to a pipe (a signal
    may come while the main thread holds any lock, or inside the handler itself); this thread
    mints the token and prints the link, so a full stdout blocks only it."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def on_signal(signum: int, frame: object) -> None:
        try:
            os.write(write_end, b"!")
        except BlockingIOError:
            pass  # one is pending already

    def mint() -> None:
        while os.read(read_end, 4096):
            try:
                announce(sessions.new_login_token())
            except Exception:  # a broken stdout must not end the thread: the next try may do
                log.exception("could not print a fresh login link")

    signal.signal(signal.SIGUSR1, on_signal)
    threading.Thread(target=mint, name="fresh-links", daemon=True).start()


def serve(daemon_socket: Path, sock: socket.socket, served: set[str], sessions: Sessions,
          announce: Callable[[str], None]) -> None:  # fmt: skip
    """`announce` prints the login link: once now, and again with a fresh token on SIGUSR1
    (a logged-out or expired user gets back in without a restart)."""
    import uvicorn

    from pi_render.web.app import create_web_app

    events = EventLog()
    stop = threading.Event()
    threading.Thread(target=follow_daemon, args=(daemon_socket, events, stop), name="events",
                     daemon=True).start()  # fmt: skip
    app = create_web_app(daemon_socket, served, sessions, events)
    relay_fresh_links(sessions, announce)
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    announce(sessions.login_token or "")
    # browsers hold their event streams open: a stop must not wait for them to leave
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, limit_concurrency=256,
                            http=guarded_protocol(is_loopback(sock.getsockname()[0])))  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
