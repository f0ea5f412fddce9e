"""Commands about the daemon and its config rather than one task: workflows, audit, cron,
queues, health."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Column, Table

from pi_render.cli import EXIT_TASK_FAILED, JsonOpt, SocketOpt, app, client_for, emit_json, out

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
        gpus = data.get("gpus") or {}
        found = "; ".join(f"{g['backend']} {g['name']}" for g in gpus.get("devices", []))
        if not found:
            found = "still asking Blender" if gpus.get("state") == "probing" else "none seen"
        out.print(f"  GPUs: {found}")
    if data["status"] != "ok":
        raise typer.Exit(1)


@app.command()
def blenders(socket: SocketOpt = None, as_json: JsonOpt = False) -> None:
    """The Blenders the daemon found (`blender`, `[[blenders]]`, PATH, bpy): each file renders on
    the oldest that opens it; a file newer than all of them is refused at submit."""
    with client_for(socket) as client:
        health = client.health()
    gpus = health.get("gpus") or {}
    seen, probing = gpus.get("by_blender", {}), gpus.get("state") == "probing"
    data = [{**b, "gpus": None if probing else seen.get(b["path"], []),
             "gpu_error": gpus.get("errors", {}).get(b["path"])}
            for b in health.get("blenders", [])]  # fmt: skip
    if as_json:
        emit_json(data)
        return
    table = Table("version", "kind", "path", "GPUs")
    for index, blender in enumerate(data):
        found = blender["gpus"]
        shown = (
            "still asking…"
            if found is None
            else "; ".join(f"{g['backend']} {g['name']}" for g in found)
            or blender["gpu_error"]
            or "none"
        )
        table.add_row(f"{blender['version']}{' (default)' if index == 0 else ''}",
                      blender["kind"], blender["path"], shown)  # fmt: skip
    out.print(table if data else "no Blender found: install Debian's `blender`, or see "
              "[[blenders]] in the config")  # fmt: skip
