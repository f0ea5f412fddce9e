"""uvicorn on a Unix socket that we bind ourselves: uvicorn would chmod it 0666."""

import contextlib
import errno
import grp
import os
import socket
import stat
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from pi_render.api.connections import ConnectionGuard
from pi_render.errors import ConfigError, PiRenderError

SOCKET_MODE = 0o660  # owner and group; never the world


class SocketInUse(PiRenderError):
    """Raised when another live process answers on the configured socket path."""


def socket_gid(group: str | None) -> int | None:
    """The gid `socket_group` names (a name or a number); None when it is not set.

    Raises:
        ConfigError: no such group.
    """
    if group is None:
        return None
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group {group!r}: no such group (groupadd it)") from None


def bind_unix_socket(path: Path, gid: int | None = None) -> socket.socket:
    """Bind `path` with mode 0660 (group `gid` when given), replacing a stale socket file but
    never a live one.

    Raises:
        SocketInUse: something answers there already.
        PiRenderError: the path exists and is not a socket; the group cannot be given.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)  # the socket is 0660 itself
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise PiRenderError(f"{path} exists and is not a socket; remove it or choose another")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            path.unlink(missing_ok=True)  # stale: its daemon is gone
        else:
            raise SocketInUse(f"another process is serving on {path}; stop it or choose another")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # so the socket is never world-accessible, even for an instant
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    try:
        if gid is not None:  # before it listens: nobody else's group ever sees it open
            os.chown(path, -1, gid)
        os.chmod(path, SOCKET_MODE)
    except OSError as exc:
        sock.close()
        path.unlink(missing_ok=True)
        why = f"{exc.strerror} (the daemon must be root or a member of that group)"
        raise PiRenderError(f"cannot give the socket {path} group {gid}: {why}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


class SocketServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, guard: ConnectionGuard) -> SocketServer:
    config = uvicorn.Config(
        app,
        http=guard.protocol(),  # peer credentials in every request; header deadline; uid cap
        log_config=None,  # our logging setup applies
        access_log=False,
        lifespan="off",
        ws="none",  # no WebSocket routes; an upgrade would also slip past the connection guard
        timeout_graceful_shutdown=2,
        limit_concurrency=1000,
        backlog=512,
    )
    return SocketServer(config)
