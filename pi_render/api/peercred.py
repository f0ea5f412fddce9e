"""Who is on the other end of the socket: SO_PEERCRED, read once per connection and put into
each request's ASGI scope as `scope["extensions"]["peercred"] = {"uid", "gid", "pid"}`."""

import asyncio
import socket
import struct
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket | None) -> dict[str, int] | None:
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    pid, uid, gid = _CREDS.unpack(raw)
    return {"uid": uid, "gid": gid, "pid": pid}


class PeerCredProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the peer's credentials in every request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._peercred = peer_credentials(transport.get_extra_info("socket"))
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: Any = self.scope
        scope.setdefault("extensions", {})["peercred"] = self._peercred
