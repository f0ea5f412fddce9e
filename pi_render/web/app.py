"""The dashboard's pages (server-rendered with Jinja2; a little plain JavaScript follows the
event stream): `/` tasks, `/tasks/{id}`, `/submit`, `/health`, `/cron`, `/failed`; frames and
thumbnails; `/events` (the daemon's stream, fanned out); `/metrics` (re-served for scrapers)."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Query, Request, UploadFile
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pi_render.api.client import Client
from pi_render.api.events import EventLog, event_number
from pi_render.errors import PiRenderError
from pi_render.task.record import Priority, TaskRecord
from pi_render.web.guard import COOKIE, Guard, Sessions
from pi_render.web.thumbs import FrameRefused, Thumbnails, open_frame

HERE = Path(__file__).parent
PAGE = 50
GRID = 500  # thumbnails on one task page (a 1M-frame job shows its first 500)
MAX_UPLOAD = 4 << 30


def create_web_app(socket: Path, hosts: set[str], sessions: Sessions,
                   events: EventLog) -> Any:  # fmt: skip
    app = FastAPI(title="pi-render web", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                            autoescape=select_autoescape(["html"]))  # fmt: skip
    thumbs = Thumbnails()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def client() -> Client:
        return Client(socket, timeout=30)

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        with client() as daemon:
            me = daemon.me()
        html = templates.get_template(template).render(
            csrf=request.scope["state"]["csrf"], me=me, **context
        )
        return HTMLResponse(html)

    @app.exception_handler(PiRenderError)
    async def refused(request: Request, exc: PiRenderError) -> Response:
        return PlainTextResponse(str(exc), status_code=exc.http_status)

    @app.exception_handler(ValueError)
    async def malformed(request: Request, exc: ValueError) -> Response:
        """A form field that is not what it says (`frames=a-b`, a priority that is none)."""
        return PlainTextResponse(f"a form field is not valid: {exc}", status_code=422)

    @app.get("/login")
    def login(token: str = "") -> Response:
        session = sessions.log_in(token)
        if session is None:
            return PlainTextResponse(
                "this login link was used already or is wrong: `kill -USR1` the pi-render web "
                "process (or restart it) for a new one",
                status_code=403,
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/",
                            max_age=int(sessions.lifetime_s))  # fmt: skip
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        sessions.log_out(request.scope["state"]["session"])
        response = PlainTextResponse("logged out: the link pi-render web prints on SIGUSR1 "
                                     "logs you in again")  # fmt: skip
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def tasks(request: Request, status: str | None = None, type: str | None = None,
              offset: int = Query(0, ge=0)) -> HTMLResponse:  # fmt: skip
        with client() as daemon:
            records = daemon.list(status or None, type or None, PAGE, offset)
        return page(request, "tasks.html", tasks=records, status=status or "",
                    type=type or "", offset=offset, page=PAGE)  # fmt: skip

    @app.get("/tasks/{task_id}", response_class=HTMLResponse)
    def task(request: Request, task_id: str) -> HTMLResponse:
        with client() as daemon:
            record = daemon.get(task_id)
            chunks = daemon.chunks(task_id) if record.chunks else []
            tail = daemon.log_tail(record.id)
        return page(request, "task.html", task=record, chunks=chunks, frames=_frames(record),
                    log=tail)  # fmt: skip

    @app.get("/tasks/{task_id}/log.txt", response_class=PlainTextResponse)
    def log_tail(task_id: str) -> str:
        with client() as daemon:
            return daemon.log_tail(task_id)

    @app.post("/tasks/{task_id}/{action}")
    def control(task_id: str, action: str, priority: str = Form("high")) -> Response:
        with client() as daemon:
            if action == "cancel":
                daemon.cancel(task_id)
            elif action == "retry":
                daemon.retry(task_id)
            elif action in ("pause", "resume"):
                daemon.pause(task_id, paused=action == "pause")
            elif action == "priority":
                daemon.reprioritise(task_id, Priority(priority).value)
            else:
                return PlainTextResponse("no such action", status_code=404)
        return RedirectResponse(f"/tasks/{task_id}", status_code=303)

    @app.get("/tasks/{task_id}/frames/{frame}.jpg")
    def thumbnail(task_id: str, frame: int) -> Response:
        output_dir, path = _frame_path(client, task_id, frame)
        try:
            data = thumbs.thumbnail(output_dir, path)
        except FrameRefused as exc:
            return PlainTextResponse(str(exc), status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

    @app.get("/tasks/{task_id}/frames/{frame}")
    def full_frame(task_id: str, frame: int) -> Response:
        output_dir, path = _frame_path(client, task_id, frame)
        try:
            fd, info = open_frame(output_dir, path)
        except FrameRefused as exc:
            return PlainTextResponse(str(exc), status_code=404)
        kind = {
            ".png": "image/png",
            ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg",
            ".webp": "image/webp",
            ".tif": "image/tiff",
            ".tiff": "image/tiff",
            ".exr": "image/x-exr",
            ".mp4": "video/mp4",
            ".webm": "video/webm",
            ".mkv": "video/x-matroska",
        }.get(Path(path).suffix.lower(), "application/octet-stream")
        return StreamingResponse(_chunks(fd, info.st_size), media_type=kind,
                                 headers={"Content-Length": str(info.st_size)})  # fmt: skip

    @app.get("/submit", response_class=HTMLResponse)
    def submit_form(request: Request) -> HTMLResponse:
        return page(request, "submit.html", inspected=None)

    @app.post("/submit", response_class=HTMLResponse)
    def upload(request: Request, file: UploadFile) -> HTMLResponse:
        """Store the upload where the daemon said (as this dashboard's user), then show what
        the file will render before anything is queued. A plain `def`: the copy and the
        inspection run in a worker thread, never on the event loop."""
        name = Path(file.filename or "upload.blend").name
        data_type = "MultiFile" if name.lower().endswith(".zip") else "SingleFile"
        with client() as daemon:
            upload_id, target = daemon.init_new_task(data_type)
        written = 0
        try:
            with open(target, "xb") as out:  # the daemon made the folder; the file is new
                while chunk := file.file.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_UPLOAD:
                        raise PiRenderError("the upload is larger than 4 GiB")
                    out.write(chunk)
        except BaseException:
            Path(target).unlink(missing_ok=True)  # nothing half-written is left behind
            raise
        return page(request, "submit.html", inspected=_inspect(target, data_type),
                    upload_id=upload_id, name=name)  # fmt: skip

    @app.post("/submit/{upload_id}")
    def run(upload_id: str, frames: str = Form(""), output_type: str = Form(""),
            chunk_size: str = Form(""), priority: str = Form("normal"),
            blend: str = Form("")) -> Response:  # fmt: skip
        overrides: dict[str, Any] = {"priority": Priority(priority).value}
        if frames.strip():
            first, _, last = frames.partition("-")
            overrides["start_frame"], overrides["end_frame"] = int(first), int(last or first)
        if output_type.strip():
            overrides["output_type"] = output_type.strip()
        if chunk_size.strip():
            overrides["chunk_size"] = int(chunk_size)
        if blend.strip():
            overrides["blend"] = blend.strip()
        with client() as daemon:
            record = daemon.run_task(upload_id, **overrides)
        return RedirectResponse(f"/tasks/{record.id}", status_code=303)

    @app.get("/health", response_class=HTMLResponse)
    def health(request: Request) -> HTMLResponse:
        with client() as daemon:
            data, hosts = daemon.health(), daemon.hosts()
        return page(request, "health.html", health=data, hosts=hosts)

    @app.get("/cron", response_class=HTMLResponse)
    def cron(request: Request) -> HTMLResponse:
        with client() as daemon:
            jobs = daemon.cron()
        return page(request, "cron.html", jobs=jobs)

    @app.get("/failed", response_class=HTMLResponse)
    def failed(request: Request) -> HTMLResponse:
        with client() as daemon:
            entries = daemon.failed()
        return page(request, "failed.html", entries=entries)

    @app.get("/events")
    def stream(request: Request) -> Response:
        resumed = event_number(request.headers.get("last-event-id"))
        start = resumed if resumed is not None else events.last
        return StreamingResponse(events.stream(start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    @app.get("/metrics")
    def metrics() -> Response:
        with client() as daemon:
            text = daemon.metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Guard(app, sessions, hosts, MAX_UPLOAD + (1 << 20))  # the form's fields beside it


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """The frame's bytes through the handle that was checked, a MiB at a time."""
    with os.fdopen(fd, "rb") as handle:
        left = size
        while left > 0 and (chunk := handle.read(min(left, 1 << 20))):
            left -= len(chunk)
            yield chunk


def _frames(record: TaskRecord) -> list[int]:
    """Frame numbers to show (at most GRID of them): the result's once done, else the range
    asked for."""
    if record.result and record.result.get("frames"):
        return sorted({int(f["frame"]) for f in record.result["frames"][:GRID]})
    args = record.args
    if args.get("start_frame") is None or args.get("end_frame") is None:
        return []
    wanted = range(int(args["start_frame"]), int(args["end_frame"]) + 1,
                   int(args.get("frame_step") or 1))  # fmt: skip
    return list(wanted[:GRID])


def _frame_path(client: Any, task_id: str, frame: int) -> tuple[str, str]:
    """The output folder and the frame's file: from the result, or (while it renders) the one
    file in the folder named for that frame."""
    with client() as daemon:
        record = daemon.get(task_id)
    output_dir = str(record.args.get("output_dir") or "")
    for entry in (record.result or {}).get("frames", []):
        if int(entry["frame"]) == frame:
            return output_dir, str(entry["path"])
    stem = f"frame_{frame:04d}."
    try:
        names = [n for n in os.listdir(output_dir) if n.startswith(stem)]
    except OSError:
        names = []
    return output_dir, str(Path(output_dir) / names[0]) if names else ""


def _inspect(path: Path, data_type: str) -> dict[str, Any]:
    """What the upload will render, and the files it needs that the upload lacks."""
    if data_type == "MultiFile":
        return {"kind": "zip", "note": "a zipped project: name its .blend below"}
    from pi_render.blend import BlendFileError, read_blend_info
    from pi_render.blend.trace import trace_dependencies

    try:
        info = read_blend_info(path)
        trace = trace_dependencies(path)
    except BlendFileError as exc:
        return {"kind": "error", "error": exc.message}
    scene = info.scene
    missing = sorted({f"{d.stored} ({d.problem})" for d in trace.missing})
    return {"kind": "blend", "version": info.blender_version, "scene": scene.name,
            "frames": f"{scene.frame_start}-{scene.frame_end}", "engine": scene.engine,
            "format": scene.file_format, "size": f"{scene.resolution_x}x{scene.resolution_y}",
            "dependencies": len(trace.dependencies), "missing": missing}  # fmt: skip
