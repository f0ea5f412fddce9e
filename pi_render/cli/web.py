"""`pi-render web`: the dashboard (the web extra)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pi_render.cli import EXIT_USAGE, JsonOpt, SocketOpt, app, emit_json, fail, out


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
    served = {bind} | ({f"localhost:{port}"} if host == "127.0.0.1" else set())
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
    link = f"http://{bind}/login?token={sessions.login_token}"
    if as_json:
        emit_json({"url": link, "metrics_token": sessions.metrics_token, "bind": bind})
        sys.stdout.flush()  # the one-time link must reach a pipe now, not at exit
    else:
        out.print(f"pi-render web on http://{bind}/ — log in once with:\n  {link}")
        out.print(f"Prometheus: GET http://{bind}/metrics with 'Authorization: Bearer "
                  f"{sessions.metrics_token}'")  # fmt: skip
    serve(path, sock, served, sessions)
