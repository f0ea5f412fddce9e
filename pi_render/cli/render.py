"""The render commands: `render` (with its progress bar), `logs` and `sample`."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pi_render.api.client import Client
from pi_render.cli import (
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    JsonOpt,
    SocketOpt,
    _finish,
    app,
    client_for,
    emit_json,
    err,
    fail,
    follow,
    out,
)
from pi_render.config import load_settings
from pi_render.errors import ConfigError
from pi_render.render_request import render_request
from pi_render.task.record import Priority, TaskRecord


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
def render(file: Annotated[
    Path, typer.Argument(help="A .blend, or a .zip project (with --blend).")
], blend: Annotated[
    Optional[str], typer.Option(help="The .blend inside the zip.")
] = None, frames: Annotated[
    Optional[str], typer.Option(help="Frames, e.g. 1-100 or 7.")
] = None, step: Annotated[
    Optional[int], typer.Option(min=1, help="Render every Nth frame.")
] = None, format: Annotated[
    Optional[str], typer.Option("--format", help="Blender -F name.")
] = None, output: Annotated[
    Optional[Path], typer.Option(help="Output folder.")
] = None, scene: Annotated[
    Optional[str], typer.Option(help="Scene to render.")
] = None, engine: Annotated[
    Optional[str], typer.Option(help="Engine, e.g. CYCLES.")
] = None, priority: Annotated[
    Priority, typer.Option(help="normal or high.")
] = Priority.NORMAL, timeout: Annotated[
    Optional[float], typer.Option(help="Render time limit, seconds.")
] = None, wait: Annotated[
    bool, typer.Option("--wait", help="Show progress until it ends.")
] = False, force: Annotated[
    bool, typer.Option("--force", help="Even if an identical render exists.")
] = False, allow_missing: Annotated[
    bool, typer.Option("--allow-missing", help="Render even if files it needs are missing.")
] = False, chunk_size: Annotated[
    Optional[int],
    typer.Option(
        min=0, help="Frames per chunk task (0: one task); any worker or host takes any chunk."
    ),
] = None, device: Annotated[
    Optional[str],
    typer.Option(help="auto, cpu or gpu: where Cycles renders (default: the config's device)."),
] = None, check_space: Annotated[bool, typer.Option(
    "--check-space",
    help="Render one trial frame first: refused if the job cannot fit."
    )] = False,  # fmt: skip
    socket: SocketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render a .blend and every file it needs (its own frames and format unless told)."""
    if device not in (None, "auto", "cpu", "gpu"):
        fail(f"--device must be auto, cpu or gpu, not {device!r}", EXIT_USAGE)
    try:
        request = render_request(
            str(file), blend=blend, frames=frames, step=step, output_type=format,
            output=str(output) if output else None, scene=scene, engine=engine,
            priority=priority.value, timeout=timeout, force=force, allow_missing=allow_missing,
            chunk_size=chunk_size, device=device, check_space=check_space)  # fmt: skip
    except ValueError:
        fail(f"--frames must look like 1-100 or 7, not {frames!r}", EXIT_USAGE)
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
