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
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
        record = client.wait(task_id, left)
        show(record)
        if record.status.is_final or (deadline is not None and time.monotonic() >= deadline):
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
    from pi_render.daemon import Daemon
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
    _finish(record, as_json, check=False)


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


workflow_app = typer.Typer(help="Named sequences of steps from the config.")
app.add_typer(workflow_app, name="workflow")


@workflow_app.command("run")
def workflow_run(
    name: str,
    file: Annotated[Path, typer.Argument(help="The file the steps' {file} stands for.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every step ended.")] = False,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a workflow on FILE; with --wait, exit 1 unless every step completed."""
    with client_for(socket) as client:
        run = client.run_workflow(name, str(file.expanduser().absolute()))
        status = client.workflow_status(run["run_id"])
        if wait:
            for task_id in run["tasks"]:
                client.wait(task_id)
            status = client.workflow_status(run["run_id"])
    _show_workflow(status, as_json)
    if wait and status["status"] != "completed":
        raise typer.Exit(EXIT_TASK_FAILED)


@workflow_app.command("status")
def workflow_status(run_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """A workflow run's steps and their aggregate status."""
    with client_for(socket) as client:
        status = client.workflow_status(run_id)
    _show_workflow(status, as_json)


def _show_workflow(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(status)
        return
    out.print(f"[bold]{status['name']}[/] run {status['run_id']}: {status['status']}")
    for step in status["steps"]:
        why = f"  {step['error']}" if step["error"] else ""
        out.print(f"  {step['type']:14} {step['task_id']}  {step['status']}{why}", highlight=False)


@app.command()
def audit(
    since: Annotated[Optional[str], typer.Option(help="ISO time, e.g. 2026-11-23T00:00")] = None,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: every state-changing request, refusals included (admins only)."""
    with client_for(socket) as client:
        entries = client.audit(since)
    if as_json:
        emit_json(entries)
        return
    for e in entries:
        out.print(f"{e['time'][:19]}  uid {e['uid']:<6} {str(e['role'] or '-'):9} "
                  f"{e['action']:40} {e.get('task_id') or '':22} {e['outcome']}",
                  highlight=False)  # fmt: skip


@app.command()
def cron(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Periodic jobs with their last and next runs."""
    with client_for(socket) as client:
        jobs = client.cron()
    if as_json:
        emit_json(jobs)
        return
    table = Table(*(Column(c, no_wrap=True) for c in ("job", "schedule", "task", "last", "next")),
                  box=box.SIMPLE_HEAD)  # fmt: skip
    for job in jobs:
        table.add_row(job["name"], job["schedule"], job["task"],
                      (job["last_fire"] or "-")[:19], (job["next_fire"] or "-")[:19])  # fmt: skip
    out.print(table)


@app.command()
def queues(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Queue depth and live workers per routing label."""
    with client_for(socket) as client:
        data = client.queues()
    if as_json:
        emit_json(data)
        return
    table = Table("label", "high", "normal", "taken", "workers alive", "restarts")
    for label, q in data.items():
        w = q["workers"]
        table.add_row(
            label,
            str(q["high"]),
            str(q["normal"]),
            str(q["taken"]),
            f"{w.get('alive', 0)}/{w.get('configured', 0)}",
            str(w.get("restarts", 0)),
        )
    out.print(table)


@app.command()
def health(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """The daemon's health: workers, queues, records; exit 1 when degraded."""
    with client_for(socket) as client:
        data = client.health()
    if as_json:
        emit_json(data)
    else:
        colour = "green" if data["status"] == "ok" else "red"
        out.print(f"[{colour}]{data['status']}[/]  pi-render {data['version']}  pid {data['pid']}")
        out.print(f"  socket {data['socket']}")
        out.print(f"  data   {data['data_dir']}")
        for label, w in data["workers"].items():
            out.print(
                f"  workers {label}: {w['alive']}/{w['configured']} alive, "
                f"{w['restarts']} restarts"
            )
        counts = ", ".join(f"{k} {v}" for k, v in data["records"].items())
        out.print(f"  records: {counts}")
    if data["status"] != "ok":
        raise typer.Exit(1)


def parse_frames(spec: str) -> tuple[int, int]:
    """`1-100` → (1, 100); `7` → (7, 7)."""
    start, _, end = spec.partition("-")
    try:
        return int(start), int(end or start)
    except ValueError:
        fail(f"--frames must look like 1-100 or 7, not {spec!r}", EXIT_USAGE)


def render_progress(client: Client, task_id: str, timeout: float | None) -> TaskRecord:
    """A progress bar fed by the record's frames done and ETA, until the task ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.fields[frames]} frames"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=False) as bar:
        line = bar.add_task(f"render {task_id}", total=None, frames="…")

        def show(record: TaskRecord) -> None:
            detail = record.progress_detail or {}
            done, total = detail.get("frames_done", 0), detail.get("frames_total")
            where = "" if record.status.is_final else f" frame {detail.get('current_frame') or '…'}"
            bar.update(line, total=total, completed=done, frames=f"{done}/{total or '…'}",
                       description=f"{record.status.value}{where}")  # fmt: skip

        record = follow(client, task_id, timeout, show)
        if record.status.value == "completed" and record.result:
            n = len(record.result.get("frames", []))
            bar.update(line, total=n, completed=n, frames=f"{n}/{n}")
        return record


@app.command()
def render(
    file: Annotated[Path, typer.Argument(help="A .blend, or a .zip project (with --blend).")],
    blend: Annotated[Optional[str], typer.Option(help="The .blend inside the zip.")] = None,
    frames: Annotated[Optional[str], typer.Option(help="Frames, e.g. 1-100 or 7.")] = None,
    step: Annotated[Optional[int], typer.Option(min=1, help="Render every Nth frame.")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="Blender -F name.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Output folder.")] = None,
    scene: Annotated[Optional[str], typer.Option(help="Scene to render.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Engine, e.g. CYCLES.")] = None,
    priority: Annotated[Priority, typer.Option(help="normal or high.")] = Priority.NORMAL,
    timeout: Annotated[Optional[float], typer.Option(help="Render time limit, seconds.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until it ends.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Even if an identical render exists.")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Render even if files it needs are missing.")
    ] = False,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render a .blend and every file it needs (its own frames and format unless told)."""
    request: dict[str, Any] = {"source": str(file.expanduser().absolute()), "blend": blend,
                               "frame_step": step, "output_type": format, "scene": scene,
                               "engine": engine, "timeout_s": timeout,
                               "priority": priority.value, "force": force or None,
                               "allow_missing": allow_missing or None}  # fmt: skip
    if frames:
        request["start_frame"], request["end_frame"] = parse_frames(frames)
    if output:
        request["output_dir"] = str(output.expanduser().absolute())
    request = {k: v for k, v in request.items() if v is not None}
    with client_for(socket) as client:
        record = client.render(request)
        if wait:
            record = client.wait(record.id) if as_json else render_progress(client, record.id, None)
    _finish(record, as_json, check=wait)


@app.command()
def logs(
    task_id: str,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow until it ends.")] = False,
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Blender's log for a task; -f follows it live."""
    with client_for(socket) as client:
        text, offset = client.log(task_id)
        if as_json and not follow:
            emit_json({"task_id": task_id, "log": text, "size": offset})
            return
        sys.stdout.write(text)
        while follow:
            record = client.wait(task_id, 1.0)
            text, offset = client.log(task_id, offset)
            sys.stdout.write(text)
            sys.stdout.flush()
            if record.status.is_final and not text:
                return


@app.command()
def sample(
    target: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the .blend.")],
    frames: Annotated[int, typer.Option(min=1, max=1000, help="Frames 1..N.")] = 5,
    size: Annotated[int, typer.Option(min=8, max=4096, help="Width and height, px.")] = 32,
    as_json: JsonOpt = False,
) -> None:
    """Write a small sample scene with the Blender found here (to try pi-render out)."""
    import subprocess

    from pi_render.processor.blender import find_blender, make_sample_scene

    try:
        blender = find_blender(load_settings().blender)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if blender is None:
        fail("no Blender found: apt-get install blender (or pip install bpy)", EXIT_TASK_FAILED)
    path = target.expanduser().absolute()
    try:
        make_sample_scene(blender, path, frames, size)
    except subprocess.CalledProcessError as exc:
        fail(f"Blender could not write the sample: {(exc.stdout or '')[-500:]}", EXIT_TASK_FAILED)
    if as_json:
        emit_json({"path": str(path), "frames": frames, "size": size})
    else:
        out.print(f"wrote {path}: {frames} frames of {size}×{size} px (Cycles, 1 sample)")


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version."""
    if as_json:
        emit_json({"version": __version__})
    else:
        out.print(f"pi-render {__version__}")


def main() -> None:
    app()


from pi_render import cli_blend  # noqa: E402,F401  (registers `inspect` and `deps` on `app`)
