"""Who is on the other end of a loopback TCP connection: the uid that owns the client's
socket, from /proc/net/tcp (and tcp6). Browsers send a site's cookies to every port of the
host, so another local user could catch this dashboard's cookie with a page on a port of
their own; their requests still come from their uid, and are refused."""

from pathlib import Path

ESTABLISHED = "01"


def loopback_peer_uid(client_port: int, server_port: int) -> int | None:
    """The uid owning the socket whose local port is `client_port` and whose remote port is
    `server_port`; None when no such connection is listed (not Linux, or not loopback)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == client_port and remote_port == server_port:
                return int(fields[7])
    return None
