"""Who is on the other end of a TCP connection to the dashboard, when it comes from this host:
the uid that owns the client's socket, from /proc/net/tcp and tcp6. Browsers send a site's
cookies to every port of the host, so another local user could catch this dashboard's cookie
with a page on a port of their own; their connections still come from their uid, and are
closed as they are accepted (web/serve.py), before a byte of HTTP is read.

The client's socket is found by its exact four-tuple (its address and port, and the server's),
so no other socket can stand in for it, whatever addresses of 127.0.0.0/8 or of this host's
interfaces the connection uses."""

import ipaddress
import os
import sys
from pathlib import Path

ESTABLISHED = "01"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(field: str) -> tuple[Address, int]:
    """`0100007F:1F90` (tcp) or 32 hex digits (tcp6), each 32-bit word in host order."""
    host, _, port = field.partition(":")
    raw = b"".join(int(host[i : i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(host), 8))  # fmt: skip
    return _plain(ipaddress.ip_address(raw)), int(port, 16)


def _plain(address: Address) -> Address:
    """A v4-mapped v6 address as the v4 one (a dual-stack socket lists 127.0.0.1 that way)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def peer_uid(client: tuple[str, int], server: tuple[str, int],
             tables: tuple[str, ...] = TABLES) -> int | None:  # fmt: skip
    """The uid owning the socket whose local end is `client` and whose remote end is `server`;
    None when this host holds no such socket (the client is elsewhere, or not Linux)."""
    want = ((_plain(ipaddress.ip_address(client[0].split("%")[0])), int(client[1])),
            (_plain(ipaddress.ip_address(server[0].split("%")[0])), int(server[1])))  # fmt: skip
    port_hex = f":{int(client[1]):04X} "  # a cheap filter before a row is parsed
    for table in tables:
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            if port_hex not in line:
                continue
            fields = line.split()
            if len(fields) < 8 or fields[3] != ESTABLISHED:
                continue
            if (_address(fields[1]), _address(fields[2])) == want:
                return int(fields[7])
    return None


def is_loopback(host: str) -> bool:
    try:
        return _plain(ipaddress.ip_address(host.strip("[]").split("%")[0])).is_loopback
    except ValueError:
        return host == "localhost"


def allowed(client: tuple[str, int] | None, server: tuple[str, int] | None,
            bound_to_loopback: bool) -> bool:  # fmt: skip
    """A connection from this host must be this process's uid or root's (root can read this
    process's memory and cookie jar anyway); one from elsewhere is let through only when the
    dashboard was bound off loopback on purpose (then the network and the token decide)."""
    if client is None or server is None:
        return False
    uid = peer_uid(client, server)
    if uid is None:
        return not bound_to_loopback
    return uid in (os.getuid(), 0)
