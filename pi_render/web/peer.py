"""Who is on the other end of a TCP connection to the dashboard, when it comes from this host:
the uid that owns the client's socket. Browsers send a site's cookies to every port of the
host, so another local user could catch this dashboard's cookie with a page on a port of their
own; their connections still come from their uid, and are closed as they are accepted
(web/serve.py), before a byte of HTTP is read.

The client's socket is asked of the kernel by its exact four-tuple (NETLINK_SOCK_DIAG: one
lookup, ~30 µs, however many sockets the host has), in any state: a client that half-closes
its end before the accept is still found. A socket with no owner left (TIME_WAIT, or closed by
its process) is refused. Where netlink is not to be had, /proc/net/tcp{,6} is read instead.
A connection whose source address is this host's own is local: if its socket is not found, it
is refused, never taken for a remote client."""

import errno
import ipaddress
import os
import socket
import struct
import sys
from pathlib import Path

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Peer = tuple[int, int]  # (uid, inode); inode 0: no process holds it
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, NLMSG_ERROR = 4, 20, 1, 2
ALL_STATES, NO_COOKIE = 0xFFFFFFFF, 0xFFFFFFFF


def _plain(address: Address) -> Address:
    """A v4-mapped v6 address as the v4 one (a dual-stack socket lists 127.0.0.1 that way)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse(host: str) -> Address:
    return _plain(ipaddress.ip_address(host.strip("[]").split("%")[0]))


def diag_lookup(client: tuple[Address, int], server: tuple[Address, int]) -> Peer | None:
    """The kernel's inet_diag record of the socket `client` → `server`. Raises OSError when
    netlink cannot be used here."""
    family = socket.AF_INET if client[0].version == 4 else socket.AF_INET6
    src, dst = client[0].packed.ljust(16, b"\0"), server[0].packed.ljust(16, b"\0")
    sockid = struct.pack("!HH", client[1], server[1]) + src + dst
    sockid += struct.pack("=III", 0, NO_COOKIE, NO_COOKIE)
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, ALL_STATES) + sockid
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as link:
        link.settimeout(2.0)
        link.sendto(header + request, (0, 0))
        answer = link.recv(8192)
    kind = struct.unpack_from("=H", answer, 4)[0]
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", answer, 16)[0]
        if code == errno.ENOENT:
            return None
        raise OSError(code, os.strerror(code))
    uid, inode = struct.unpack_from("=II", answer, 16 + 4 + 48 + 12)
    return uid, inode


def table_lookup(client: tuple[Address, int], server: tuple[Address, int],
                 tables: tuple[str, ...] = TABLES) -> Peer | None:  # fmt: skip
    """The same from /proc/net/tcp{,6}: the row whose local end is `client` and remote end is
    `server`, in any state (each 32-bit word of an address in host order)."""
    port_hex = f":{client[1]:04X} "  # a cheap filter before a row is parsed
    for table in tables:
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if port_hex not in line or len(fields) < 10:
                continue
            if (_address(fields[1]), _address(fields[2])) == (client, server):
                return int(fields[7]), int(fields[9])
    return None


def _address(field: str) -> tuple[Address, int]:
    host, _, port = field.partition(":")
    raw = b"".join(int(host[i : i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(host), 8))  # fmt: skip
    return _plain(ipaddress.ip_address(raw)), int(port, 16)


def peer_of(client: tuple[str, int], server: tuple[str, int]) -> Peer | None:
    ends = (_parse(client[0]), int(client[1])), (_parse(server[0]), int(server[1]))
    try:
        return diag_lookup(*ends)
    except OSError:
        return table_lookup(*ends)


def is_local(host: str) -> bool:
    """An address of this host: loopback, or one a socket may bind to here."""
    address = _parse(host)
    if address.is_loopback:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def is_loopback(host: str) -> bool:
    try:
        return _parse(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed(client: tuple[str, int] | None, server: tuple[str, int] | None,
            bound_to_loopback: bool) -> bool:  # fmt: skip
    """A connection from this host must come from a socket this process's uid or root holds
    (root can read this process's memory and cookie jar anyway). One from elsewhere is let
    through only when the dashboard was bound off loopback on purpose: then the network and
    the token decide."""
    if client is None or server is None:
        return False
    found = peer_of(client, server)
    if found is not None:
        uid, inode = found
        return inode != 0 and uid in (os.getuid(), 0)
    return not bound_to_loopback and not is_local(client[0])
