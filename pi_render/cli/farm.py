"""The farm commands: `hosts`, `chunks JOB` and `farm unblock JOB HOST`."""

from typing import Any

import typer
from rich.table import Table

from pi_render.cli import JsonOpt, SocketOpt, app, client_for, emit_json, out
from pi_render.task.record import TaskRecord

farm_app = typer.Typer(help="Farm controls (admin).", no_args_is_help=True)
app.add_typer(farm_app, name="farm")


@app.command()
def hosts(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Each host of the farm: state, running tasks, Blender, tags, last seen, blocklists."""
    with client_for(socket) as client:
        data = client.hosts()
    if as_json:
        emit_json(data)
        return
    table = Table("host", "state", "running", "blender", "GPUs", "tags", "last seen",
                  "blocklisted for")  # fmt: skip
    for host in data:
        blender = host.get("blender") or {}
        gpus = "; ".join(f"{g['backend']} {g['name']}" for g in host.get("gpus", [])) or "-"
        table.add_row(host["name"], host["state"], ", ".join(host.get("running", [])) or "-",
                      str(blender.get("version") or "-"), gpus,
                      ", ".join(host.get("tags", [])) or "-",
                      f"{host.get('silent_s', 0)}s ago" if "silent_s" in host else "now",
                      ", ".join(b["job"] for b in host.get("blocklisted_for", [])) or "-",
                      )  # fmt: skip
    out.print(table)


def show_chunks(chunks: list[TaskRecord]) -> None:
    table = Table("chunk", "frames", "status", "attempts", "worker", "errors")
    for chunk in chunks:
        args: dict[str, Any] = chunk.args
        errors = "; ".join(f"{e.host or '?'}: {e.message[:60]}" for e in chunk.errors) or "-"
        table.add_row(chunk.id, f"{args.get('start_frame')}-{args.get('end_frame')}",
                      chunk.status.value, str(chunk.attempts), chunk.worker or "-",
                      errors)  # fmt: skip
    out.print(table)


@app.command()
def chunks(job_id: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """A render job's chunk tasks: frames, status, attempts, where they ran, errors per host."""
    with client_for(socket) as client:
        records = client.chunks(job_id)
    if as_json:
        emit_json([record.model_dump(mode="json") for record in records])
    else:
        show_chunks(records)


@farm_app.command()
def unblock(job_id: str, host: str, socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """Let a blocklisted host take a job's chunks again."""
    with client_for(socket) as client:
        result = client.unblock(job_id, host)
    if as_json:
        emit_json(result)
    else:
        out.print(f"{host}: {'unblocked' if result['lifted'] else 'was not blocklisted'} "
                  f"for job {job_id}")  # fmt: skip
