"""Slowloris and connection hogging: requests whose headers crawl in are answered 408 and cut
at `header_timeout_s`, a body that stops coming is dropped, one uid cannot hold more than
`max_connections_per_uid` connections (429), and meanwhile everyone else is served at once."""

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import DaemonProcess, wait_until
from test_access import NOBODY, open_socket_to_nobody

SLOW_CONNECTIONS = 300
DEADLINE_S = 1.0


def connect(daemon: DaemonProcess) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.socket))
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it hangs up."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


@contextmanager
def acting_as_nobody() -> Iterator[None]:
    """SO_PEERCRED reports the effective ids at connect(): switch them for a moment."""
    os.setegid(NOBODY.pw_gid)
    os.seteuid(NOBODY.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_slow_headers_are_cut_while_everyone_else_is_served(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(f"header_timeout_s = {DEADLINE_S}\n").start()
    opened = time.monotonic()
    slow = [connect(daemon) for _ in range(SLOW_CONNECTIONS)]  # root's: no per-uid cap
    for i, sock in enumerate(slow):
        if i % 2:  # half send a request line and stop; half send nothing at all
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: pi-render\r\n")
    stop = threading.Event()
    dribbler = connect(daemon)
    dribbled = threading.Thread(target=dribble, args=(dribbler, stop), daemon=True)
    dribbled.start()

    latencies = []
    for _ in range(50):  # the socket is held by 301 slow clients; others still get answers
        started = time.monotonic()
        assert daemon.client.health()["status"] == "ok"
        latencies.append(time.monotonic() - started)
    assert max(latencies) < 0.5, latencies

    for sock in slow:
        answer = read_to_end(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"RequestTimeout" in answer, answer
    dribbled.join(30)
    stop.set()
    cut_after = time.monotonic() - opened
    assert cut_after < DEADLINE_S + 10, cut_after  # a byte now and then buys no time
    assert daemon.client.health()["status"] == "ok"
    assert "request headers too slow" in daemon.log()


def test_a_body_that_stops_coming_is_dropped(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(f"header_timeout_s = {DEADLINE_S}\n").start()
    stalled = connect(daemon)
    started = time.monotonic()
    stalled.sendall(b"POST /tasks HTTP/1.1\r\nhost: pi-render\r\ncontent-type: application/json"
                    b"\r\ncontent-length: 1000\r\n\r\n{\"type\": \"noop\"")  # fmt: skip
    assert read_to_end(stalled) == b""  # hung up on, nothing half-done answered
    assert time.monotonic() - started < DEADLINE_S + 10
    assert "request body too slow" in daemon.log()
    assert sum(daemon.client.health()["records"].values()) == 0  # and nothing was submitted
    record = daemon.client.submit("noop", {"payload": "after"})  # a whole request still works
    assert daemon.client.wait(record.id, 30).status == "completed"


def dribble(sock: socket.socket, stop: threading.Event) -> None:
    """A byte every 0.1 s until the daemon hangs up."""
    for byte in b"GET /health HTTP/1.1\r\nhost: pi-render\r\nx-slow: " + b"a" * 10_000:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        if stop.wait(0.1):
            return


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_one_uid_cannot_hold_every_connection(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon('max_connections_per_uid = 8\n[roles.viewer]\nusers = ["nobody"]\n')
    daemon.start()
    open_socket_to_nobody(daemon)
    with acting_as_nobody():
        held = [connect(daemon) for _ in range(8)]
        extra = connect(daemon)
    refusal = read_to_end(extra)
    assert refusal.startswith(b"HTTP/1.1 429") and b"max_connections_per_uid = 8" in refusal
    assert daemon.client.health()["status"] == "ok"  # root is not held back

    held.pop().close()  # a slot frees up: nobody gets in again

    def served() -> bool:
        with acting_as_nobody():
            sock = connect(daemon)
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: pi-render\r\nconnection: close\r\n\r\n")
        return read_to_end(sock).startswith(b"HTTP/1.1 200")

    wait_until(served, timeout=10, what="a freed slot to let nobody in")
    for sock in held:
        sock.close()
