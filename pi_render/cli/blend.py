"""The commands that read .blend files themselves, as the user who runs them: no daemon needed."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pi_render.cli import EXIT_TASK_FAILED, JsonOpt, app, emit_json, fail, out


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A .blend file (plain, gzip or zstd).")],
    as_json: JsonOpt = False,
) -> None:
    """What a .blend will render: version, scenes, current scene's settings. No daemon needed."""
    from pi_render.blend import BlendFileError, read_blend_info

    try:
        info = read_blend_info(file)
    except BlendFileError as exc:
        fail(str(exc), EXIT_TASK_FAILED)
    if as_json:
        emit_json(info.model_dump(mode="json"))
        return
    s = info.scene
    bits = "64" if info.pointer_size == 8 else "32"
    out.print(f"[bold]{file}[/]  Blender {info.blender_version} "
              f"(file {info.file_version}.{info.file_subversion}), {info.compression}, "
              f"{bits}-bit {info.endian}-endian", highlight=False)  # fmt: skip
    out.print(f"  scenes   {', '.join(info.scenes)}  (current: [bold]{s.name}[/])")
    out.print(f"  frames   {s.frame_start}–{s.frame_end} step {s.frame_step} "
              f"(current {s.frame_current}) at {s.fps / s.fps_base:g} fps")  # fmt: skip
    scale = s.resolution_percentage / 100
    out.print(f"  size     {s.resolution_x}×{s.resolution_y} at {s.resolution_percentage}% → "
              f"{int(s.resolution_x * scale)}×{int(s.resolution_y * scale)}")  # fmt: skip
    samples = f", samples {s.cycles_samples}" if s.cycles_samples is not None else ""
    out.print(f"  engine   {s.engine}{samples}   camera {s.camera or '(none)'}")
    out.print(f"  output   {s.file_format} {s.color_mode} {s.color_depth}-bit → "
              f"{s.output_path_resolved}", highlight=False)  # fmt: skip


@app.command()
def deps(
    file: Annotated[Path, typer.Argument(help="A .blend file.")],
    as_json: JsonOpt = False,
) -> None:
    """Every file a .blend needs, through its linked libraries; what is missing. Exit 1 if any."""
    from pi_render.blend import BlendFileError, trace_dependencies

    try:
        trace = trace_dependencies(file)
    except BlendFileError as exc:
        fail(str(exc), EXIT_TASK_FAILED)
    if as_json:
        emit_json(trace.to_json())
    else:
        table = Table("kind", "file", "size", "used by", box=None, header_style="bold")
        for dep in trace.dependencies:
            if dep.packed:
                size = "packed"
            elif dep.problem:
                size = f"[red]{dep.problem}[/]"
            else:
                size = f"{dep.size:,}"
            table.add_row(dep.kind, dep.resolved, size, f"{Path(dep.holder).name}: {dep.via}")
        out.print(table)
        total = sum(d.size or 0 for d in trace.usable)
        out.print(f"{len(trace.usable)} file(s), {total:,} bytes, from {len(trace.blends)} "
                  f".blend file(s); {len(trace.missing)} missing", highlight=False)  # fmt: skip
    if trace.missing:
        raise typer.Exit(EXIT_TASK_FAILED)
