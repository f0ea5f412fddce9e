"""`pi-render web`: the dashboard (the web extra); `pi-render metrics`: the daemon's Prometheus
metrics, printed or written as a node_exporter textfile."""

import os
import socket as socket_module
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pi_render.cli import EXIT_USAGE, JsonOpt, SocketOpt, app, client_for, emit_json, fail, out


@app.command()
def web(
    bind: Annotated[str, typer.Option(help="host:port to serve on (loopback by default).")] = (
        "127.0.0.1:8765"
    ),
    metrics_token_file: Annotated[
        Optional[Path], typer.Option(help="A 0600 file holding the /metrics bearer token.")
    ] = None,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the dashboard; prints a one-time login link (and the metrics bearer token)."""
    try:
        import jinja2  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        fail("the dashboard needs the web extra: pip install 'pi-render[web]'", EXIT_USAGE)
    from pi_render.config import load_settings
    from pi_render.errors import ConfigError
    from pi_render.web.guard import Sessions
    from pi_render.web.peer import is_loopback
    from pi_render.web.serve import listen, serve

    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--bind must look like 127.0.0.1:8765, not {bind!r}", EXIT_USAGE)
    try:
        path = socket or load_settings().socket
        sock = listen(host.strip("[]"), int(port))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot serve on {bind}: {exc.strerror}", EXIT_USAGE)
    port_part = f":{port}"
    served = {bind} | ({f"localhost{port_part}"} if is_loopback(host.strip("[]")) else set())
    if host.strip("[]") in ("0.0.0.0", "::"):  # every address: answer to this host's names
        served |= {f"{name}{port_part}" for name in
                   (socket_module.gethostname(), socket_module.getfqdn(), "localhost",
                    "127.0.0.1")}  # fmt: skip
    sessions = Sessions()
    if metrics_token_file is not None:  # the same token across restarts, for a scrape config
        try:
            if metrics_token_file.stat().st_mode & 0o077:
                fail(f"{metrics_token_file} is readable by others: chmod 0600 it", EXIT_USAGE)
            sessions.metrics_token = metrics_token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {metrics_token_file}: {exc.strerror}", EXIT_USAGE)
        if len(sessions.metrics_token) < 16:
            fail("the metrics token must be at least 16 characters", EXIT_USAGE)

    def announce(token: str) -> None:
        link = f"http://{bind}/login?token={token}"
        if as_json:
            emit_json({"url": link, "metrics_token": sessions.metrics_token, "bind": bind,
                       "pid": os.getpid()})  # fmt: skip
        else:
            out.print(f"pi-render web on http://{bind}/ (pid {os.getpid()}) — log in once "
                      f"with:\n  {link}", markup=False, highlight=False)  # fmt: skip
            out.print(f"Prometheus: GET http://{bind}/metrics with 'Authorization: Bearer "
                      f"{sessions.metrics_token}'", markup=False, highlight=False)  # fmt: skip
        sys.stdout.flush()  # the one-time link must reach a pipe now, not at exit

    serve(path, sock, served, sessions, announce)


@app.command()
def metrics(
    textfile: Annotated[
        Optional[Path],
        typer.Option(help="Write them here for node_exporter's textfile collector (*.prom)."),
    ] = None,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The daemon's Prometheus metrics (text format), or each sample as JSON."""
    with client_for(socket) as client:
        text = client.metrics()
    if textfile is not None:
        write_textfile(textfile, text)
    if as_json:
        from prometheus_client.parser import text_string_to_metric_families

        samples = [{"name": s.name, "labels": s.labels, "value": s.value}
                   for f in text_string_to_metric_families(text) for s in f.samples]  # fmt: skip
        emit_json({"textfile": str(textfile), "samples": samples} if textfile else samples)
    elif textfile is None:
        sys.stdout.write(text)


def write_textfile(target: Path, text: str) -> None:
    """All or nothing, as the collector asks: a temp file in the same folder (not *.prom, so
    it is never read half written), fsynced, then renamed over the old one."""
    if target.suffix != ".prom":
        fail("node_exporter reads only *.prom files: name it e.g. pi_render.prom", EXIT_USAGE)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as exc:  # a name already there is not ours to remove
        fail(f"cannot write {target}: {exc.strerror}", 1)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        fail(f"cannot write {target}: {exc.strerror}", 1)
