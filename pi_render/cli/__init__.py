"""`pi-render`: thin commands that build a Client (or the Daemon) and print for people or --json.

Exit codes: 0 success; 1 the task failed or was cancelled; 2 usage error or request refused;
3 daemon unreachable; 4 `wait` timed out before the task ended.
"""

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from pi_render import __version__
from pi_render.api.client import ApiError, Client
from pi_render.clock import SYSTEM
from pi_render.config import load_settings
from pi_render.errors import ConfigError, DaemonAlreadyRunning, DaemonUnreachable, PiRenderError
from pi_render.task.record import Priority, TaskRecord, TaskStatus

EXIT_TASK_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4

app = typer.Typer(help="pi-render: a Blender render daemon you can trust.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SocketOpt = Annotated[
    Optional[Path],
    typer.Option("--socket", envvar="PI_RENDER_SOCKET", help="The daemon's API socket."),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", envvar="PI_RENDER_CONFIG", help="TOML config file."),
]


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@contextmanager
def client_for(socket: Path | None, config: Path | None = None) -> Iterator[Client]:
    """A client on --socket, else the configured socket; maps errors to exit codes."""
    try:
        path = socket or load_settings(config).socket
        with Client(path) as client:
            yield client
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except DaemonUnreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except ApiError as exc:
        fail(f"{exc} (HTTP {exc.http_status})", EXIT_USAGE)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def show_record(record: TaskRecord) -> None:
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(
        record.status, "cyan"
    )
    out.print(f"[bold]{record.id}[/]  {record.type}  [{colour}]{record.status.value}[/]")
    out.print(
        f"  label {record.label}  priority {record.priority.value}  attempts {record.attempts}"
    )
    out.print(f"  created {record.created_at:%Y-%m-%d %H:%M:%S}  progress {record.progress:.0%}")
    if record.result is not None and isinstance(record.result.get("frames"), list):
        frames = record.result["frames"]
        out.print(f"  {len(frames)} frame(s) in {record.result.get('output_dir')}", highlight=False)
    elif record.result is not None:
        out.print(f"  result {json.dumps(record.result)}", highlight=False)
    if record.error is not None:
        out.print(f"  [red]error {record.error.type}: {record.error.message}[/]", highlight=False)
    if "snapshot_files" in record.args:
        out.print(f"  snapshot {record.args['snapshot_files']} file(s), "
                  f"{record.args.get('snapshot_bytes') or 0:,} bytes", highlight=False)  # fmt: skip
    warnings = (record.result or {}).get("warnings") or record.args.get("warnings") or []
    for warning in warnings:
        out.print(f"  [yellow]warning[/] {warning}", highlight=False, markup=True)


def final_exit(record: TaskRecord) -> None:
    if not record.status.is_final:
        raise typer.Exit(EXIT_TIMEOUT)
    if record.status is not TaskStatus.COMPLETED:
        raise typer.Exit(EXIT_TASK_FAILED)


def follow(client: Client, task_id: str, timeout: float | None,
           show: Callable[[TaskRecord], None]) -> TaskRecord:  # fmt: skip
    """Long-poll in chunks of a second so each state can be shown; the end is still seen at
    once. Returns the last record (final, or whatever it was when `timeout` ran out)."""
    deadline = None if timeout is None else SYSTEM.monotonic() + timeout
    while True:
        left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - SYSTEM.monotonic()))
        record = client.wait(task_id, left)
        show(record)
        if record.status.is_final or (deadline is not None and SYSTEM.monotonic() >= deadline):
            return record


def wait_with_progress(client: Client, task_id: str, timeout: float | None) -> TaskRecord:
    """A status line with the task's state and progress, until it ends."""
    with err.status(f"waiting for {task_id}") as status:
        return follow(client, task_id, timeout, lambda record: status.update(
            f"{task_id} {record.status.value} {record.progress:.0%} "
            f"{record.progress_message or ''}"))  # fmt: skip


@app.command()
def serve(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Run the daemon in the foreground (logs as JSON lines with --json)."""
    from pi_render.daemon.core import Daemon
    from pi_render.logs import setup_logging

    try:
        settings = load_settings(config)
        setup_logging(settings.log_level, "json" if as_json else settings.log_format)
        code = Daemon(settings, config_path=config).run()
    except DaemonAlreadyRunning as exc:
        fail(str(exc), 1)
    except PiRenderError as exc:
        fail(str(exc), EXIT_USAGE)
    raise typer.Exit(code)


@app.command()
def submit(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="Task type, e.g. noop.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    priority: Annotated[Priority, typer.Option(help="normal or high.")] = Priority.NORMAL,
    label: Annotated[Optional[str], typer.Option(help="Routing label override.")] = None,
    parent: Annotated[Optional[str], typer.Option(help="Run after this task completed.")] = None,
    max_runtime: Annotated[
        Optional[float], typer.Option("--max-runtime", help="Fail it after S seconds.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the task to end.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after S.")] = None,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a task; with --wait, exit 1 if it fails or is cancelled."""
    try:
        parsed = json.loads(args)
    except ValueError as exc:
        fail(f"--args is not valid JSON: {exc}", EXIT_USAGE)
    if not isinstance(parsed, dict):
        fail("--args must be a JSON object", EXIT_USAGE)
    with client_for(socket) as client:
        record = client.submit(type_name, parsed, priority.value, label, max_runtime, parent)
        if wait:
            record = (client.wait if as_json else _progress_wait(client))(record.id, timeout)
    _finish(record, as_json, check=wait)


def _progress_wait(client: Client) -> Callable[[str, float | None], TaskRecord]:
    return lambda task_id, timeout: wait_with_progress(client, task_id, timeout)


def _finish(record: TaskRecord, as_json: bool, check: bool) -> None:
    if as_json:
        emit_json(record.model_dump(mode="json"))
    else:
        show_record(record)
    if check:
        final_exit(record)


@app.command()
def status(task_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Show one task's record."""
    with client_for(socket) as client:
        record = client.get(task_id)
        chunks = client.chunks(task_id) if record.chunks and not as_json else []
    _finish(record, as_json, check=False)
    if chunks:
        from pi_render.cli.farm import show_chunks

        show_chunks(chunks)


@app.command("wait")
def wait_cmd(
    task_id: str,
    timeout: Annotated[Optional[float], typer.Option(help="Give up after S seconds.")] = None,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a task ends: exit 0 completed, 1 failed/cancelled, 4 still running at timeout."""
    with client_for(socket) as client:
        record = (
            client.wait(task_id, timeout)
            if as_json
            else wait_with_progress(client, task_id, timeout)
        )
    _finish(record, as_json, check=True)


@app.command()
def cancel(task_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a pending task, or ask a running one to stop."""
    with client_for(socket) as client:
        record = client.cancel(task_id)
    _finish(record, as_json, check=False)


@app.command()
def forget(task_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a finished task's record, log and snapshot (its outputs stay); frees quota."""
    with client_for(socket) as client:
        record = client.forget(task_id)
    if as_json:
        emit_json({"forgotten": record.id, "status": record.status.value})
    else:
        out.print(f"forgot {record.id} ({record.status.value}); its outputs stay")


@app.command("list")
def list_cmd(
    status: Annotated[Optional[TaskStatus], typer.Option(help="Only this status.")] = None,
    type_name: Annotated[Optional[str], typer.Option("--type", help="Only this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    with client_for(socket) as client:
        records = client.list(status.value if status else None, type_name, limit, offset)
    if as_json:
        emit_json([r.model_dump(mode="json") for r in records])
        return
    columns = ("id", "type", "status", "tries", "created", "done")
    table = Table(*(Column(c, no_wrap=True) for c in columns), box=box.SIMPLE_HEAD)
    for r in records:
        table.add_row(
            r.id,
            r.type,
            r.status.value + (" !" if r.priority.value == "high" else ""),
            str(r.attempts),
            f"{r.created_at:%m-%d %H:%M}",
            f"{r.progress:.0%}",
        )
    out.print(table)


@app.command()
def retry(task_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Requeue a dead or waiting task now, with a fresh attempt budget."""
    with client_for(socket) as client:
        record = client.retry(task_id)
    _finish(record, as_json, check=False)


@app.command()
def priority(
    task_id: str,
    level: Annotated[Priority, typer.Argument(help="normal or high")],
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a task that waits in its queue to another priority."""
    with client_for(socket) as client:
        record = client.reprioritise(task_id, level.value)
    _finish(record, as_json, check=False)


@app.command()
def failed(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Failed tasks: waiting for their next attempt, or dead."""
    with client_for(socket) as client:
        entries = client.failed()
    if as_json:
        emit_json(entries)
        return
    table = Table(*(Column(c, no_wrap=True) for c in ("id", "type", "state", "tries", "next")),
                  "last error", box=box.SIMPLE_HEAD)  # fmt: skip
    for e in entries:
        error = (e.get("last_error") or {}).get("message", "")
        table.add_row(e["task_id"], e["type"], e["state"], str(e["attempts"]),
                      (e.get("next_attempt_at") or "")[11:19], error[:60])  # fmt: skip
    out.print(table)


def _pause(target: str, paused: bool, socket: Path | None, as_json: bool) -> None:
    with client_for(socket) as client:
        is_label = target in client.queues()
        result = client.pause(target, paused, label=is_label)
    if as_json:
        emit_json(result if is_label else result.model_dump(mode="json"))
    elif is_label:
        state = "paused: its queue accepts, its workers take nothing" if paused else "resumed"
        out.print(f"label {target} {state}")
    else:
        out.print(f"task {target} {'paused (SIGSTOP)' if paused else 'resumed (SIGCONT)'}")


@app.command()
def pause(
    target: Annotated[str, typer.Argument(help="A routing label, or a running render's id.")],
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pause a label (its queue keeps accepting) or a running render (SIGSTOP)."""
    _pause(target, True, socket, as_json)


@app.command()
def resume(
    target: Annotated[str, typer.Argument(help="A routing label, or a paused render's id.")],
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume a paused label or render."""
    _pause(target, False, socket, as_json)


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version."""
    if as_json:
        emit_json({"version": __version__})
    else:
        out.print(f"pi-render {__version__}")


def main() -> None:
    app()


from pi_render.cli import blend, daemon, farm, render, web  # noqa: E402,F401  (commands)
