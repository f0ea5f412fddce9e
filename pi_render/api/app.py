"""HTTP/JSON routes over the task service; every error is JSON a person can act on."""

import errno
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pi_render import __version__
from pi_render.api.access import NO_SUCH_TASK, AccessControl, AccessPolicy, AuditLog
from pi_render.api.events import EventLog, event_number
from pi_render.api.limits import BodyLimit
from pi_render.api.waiters import FinalStateWaiters
from pi_render.controls import Requirements
from pi_render.errors import PiRenderError
from pi_render.identity import Caller
from pi_render.manifest.failed import FailedTask
from pi_render.service import TaskService
from pi_render.task.base import task_types
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workflows import UnknownWorkflow, Workflow, WorkflowRun

MAX_WAIT_S = 3600.0
MAX_BATCH = 1000
MAX_OFFSET = 1 << 62  # SQLite's integers and file offsets stop at 2**63


class SubmitRequest(BaseModel):
    """POST /tasks body."""

    model_config = ConfigDict(extra="forbid")

    type: str
    args: dict[str, Any] | None = None
    priority: Priority = Priority.NORMAL
    label: str | None = None
    timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    parent: str | None = None
    force: bool = False  # submit even if an identical render exists
    requires: Requirements | None = None


class BatchSubmitRequest(BaseModel):
    """POST /tasks/batch body: all are accepted, or none."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH)


class RenderRequest(BaseModel):
    """POST /render-tasks body: a source on this host plus any overrides (see RenderArgs)."""

    model_config = ConfigDict(extra="allow")

    priority: Priority = Priority.NORMAL
    force: bool = False
    requires: Requirements | None = None


class InitUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_type: Literal["SingleFile", "MultiFile"] = "SingleFile"


class InitUploadView(BaseModel):
    task_id: str
    file_path: str


class RunUploadRequest(BaseModel):
    """POST /render-tasks/run_task body: the id from init_new_task plus any overrides."""

    model_config = ConfigDict(extra="allow")

    task_id: str = Field(pattern=r"^[0-9a-f]{20}$")
    priority: Priority = Priority.NORMAL


class PriorityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: Priority


class WorkflowRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str


class TaskStatusView(BaseModel):
    """The orchestration seed's status route: the few fields a dashboard polls."""

    task_id: str
    status: TaskStatus
    progress: float
    progress_message: str | None
    attempts: int
    error: str | None


def _caller(request: Request) -> Caller | None:
    """Who asks: uid, gid and pid from SO_PEERCRED, and their groups, resolved once here."""
    return Caller.from_peer((request.scope.get("extensions") or {}).get("peercred"))


def _json(model: BaseModel, status: int = 200) -> Response:
    """Serialise once, in pydantic's Rust core (FastAPI would validate the model again)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _json_list(models: list[TaskRecord], status: int = 200) -> Response:
    body = "[" + ",".join(m.model_dump_json() for m in models) + "]"
    return Response(body, status_code=status, media_type="application/json")


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": kind, "message": message, **extra})


def error_answer(exc: PiRenderError | OSError) -> JSONResponse:
    """What a refusal or a failed write is answered with: by the routes and the short path."""
    if isinstance(exc, PiRenderError):
        return _error(exc.http_status, type(exc).__name__, str(exc), **exc.details())
    if exc.errno == errno.ENOSPC:
        return _error(507, "DiskFull", "the disk is full; nothing was changed")
    return _error(500, type(exc).__name__, f"the daemon could not do that: {exc}")


class UnblockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: str = Field(min_length=1, max_length=64)
    host: str = Field(min_length=1, max_length=64)


def create_app(
    service: TaskService,
    waiters: FinalStateWaiters,
    health: Callable[[], dict[str, Any]],
    queues: Callable[[], dict[str, Any]],
    cron: Callable[[], list[dict[str, Any]]] = lambda: [],
    workflows: dict[str, Workflow] | None = None,
    max_request_bytes: int = 1 << 20,
    access: tuple[AccessPolicy, AuditLog] | None = None,
    hosts: Callable[[], list[dict[str, Any]]] = lambda: [],
    unblock: Callable[[str, str], dict[str, Any]] | None = None,
    metrics: Callable[[], bytes] = lambda: b"",
    events: EventLog | None = None,
) -> FastAPI:
    defined = workflows or {}
    app = FastAPI(title="pi-render", version=__version__)
    app.add_middleware(BodyLimit, limit=max_request_bytes)
    if access is not None:

        def owner_of(task_id: str) -> int | None:
            """The submitter's uid; NO_SUCH_TASK (the route says 404); None: the daemon's own
            (cron, the watch folder), which only admins control."""
            try:
                who = service.get(task_id).submitted_by
            except PiRenderError:
                return NO_SUCH_TASK
            return who["uid"] if who else None

        app.add_middleware(AccessControl, policy=access[0], audit=access[1], owner_of=owner_of)

        @app.get("/audit")
        def audit(since: str | None = None, limit: int = Query(1000, ge=1, le=100000)) -> Any:
            return access[1].read(since, limit)

    @app.exception_handler(PiRenderError)
    async def _pi_render_error(request: Request, exc: PiRenderError) -> JSONResponse:
        return error_answer(exc)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "MalformedJSON", "the request body is not valid JSON")
        fields = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in errors
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return _error(422, "InvalidRequest", f"invalid request: {summary}", fields=fields)

    @app.get("/health")
    def get_health() -> dict[str, Any]:
        return health()

    @app.post("/tasks", status_code=201, response_model=TaskRecord)
    def submit(body: SubmitRequest, request: Request) -> Response:
        requires = body.requires.model_dump() if body.requires else None
        record, created = service.submit(body.type, body.args, body.priority, body.label,
                                         timeout_s=body.timeout_s, parent=body.parent,
                                         force=body.force, requires=requires,
                                         caller=_caller(request))  # fmt: skip
        request.state.audit_task_id = record.id
        return _json(record, 201 if created else 200)  # 200: an identical one was there

    @app.post("/tasks/batch", status_code=201, response_model=list[TaskRecord])
    def submit_batch(body: BatchSubmitRequest, request: Request) -> Response:
        answers = service.submit_many([(t.type, t.args, t.priority, t.label) for t in body.tasks],
                                      caller=_caller(request))  # fmt: skip
        request.state.audit_task_id = ",".join(a.record.id for a in answers)
        return _json_list([a.record for a in answers], 201)

    @app.get("/tasks", response_model=list[TaskRecord])
    def list_tasks(
        status: TaskStatus | None = None,
        type: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ) -> Response:
        return _json_list(service.list(status, type, limit, offset))

    @app.get("/tasks/{task_id}", response_model=TaskRecord)
    def get_task(task_id: str) -> Response:
        return _json(service.get(task_id))

    @app.post("/tasks/{task_id}/cancel", response_model=TaskRecord)
    def cancel(task_id: str) -> Response:
        record = service.control.cancel(task_id)
        # 202 while running: the processor was asked to stop; `wait` tells when it has
        return _json(record, 200 if record.status.is_final else 202)

    @app.delete("/tasks/{task_id}", response_model=TaskRecord)
    def forget(task_id: str) -> Response:
        """A finished task's record, log and snapshot are deleted (outputs stay)."""
        return _json(service.control.forget(task_id))

    @app.post("/tasks/{task_id}/retry", response_model=TaskRecord)
    def retry(task_id: str) -> Response:
        return _json(service.control.retry(task_id))

    @app.post("/tasks/{task_id}/priority", response_model=TaskRecord)
    def reprioritise(task_id: str, body: PriorityRequest) -> Response:
        """A task still waiting in its queue moves to another priority."""
        return _json(service.control.reprioritise(task_id, body.priority))

    @app.get("/failed")
    def failed() -> list[FailedTask]:
        return service.failed_tasks()

    @app.get("/tasks/{task_id}/wait", response_model=TaskRecord)
    async def wait(task_id: str, timeout: float = Query(30.0, ge=0, le=MAX_WAIT_S)) -> Response:
        future = waiters.register(task_id)
        try:
            record = await run_in_threadpool(service.get, task_id)
            if not record.status.is_final and timeout > 0:
                await waiters.wait(future, timeout)
                record = await run_in_threadpool(service.get, task_id)
            return _json(record)
        finally:
            waiters.unregister(task_id, future)

    @app.post("/render-tasks", status_code=201, response_model=TaskRecord)
    def submit_render(body: RenderRequest, request: Request) -> Response:
        args = body.model_dump(exclude={"priority", "force", "requires"})
        requires = body.requires.model_dump() if body.requires else None
        record, created = service.submit("render", args, body.priority, force=body.force,
                                         requires=requires, caller=_caller(request))  # fmt: skip
        request.state.audit_task_id = record.id
        return _json(record, 201 if created else 200)

    @app.post("/render-tasks/init_new_task", status_code=201)
    def init_new_task(request: Request, body: InitUploadRequest | None = None) -> InitUploadView:
        name = "project.zip" if body and body.data_type == "MultiFile" else "scene.blend"
        task_id, path = service.uploads.init(name, _caller(request))
        return InitUploadView(task_id=task_id, file_path=str(path))

    @app.post("/render-tasks/run_task", status_code=201, response_model=TaskRecord)
    def run_task(body: RunUploadRequest, request: Request) -> Response:
        args = body.model_dump(exclude={"priority", "task_id"})
        record, _ = service.uploads.run(body.task_id, args, body.priority, _caller(request))
        request.state.audit_task_id = record.id
        return _json(record, 201)

    @app.get("/tasks/{task_id}/log")
    def task_log(task_id: str, offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> Response:
        """Blender's log from byte `offset`; `X-Log-Size` says where to continue (for -f)."""
        text, size = service.log(task_id, offset)
        return Response(text, media_type="text/plain; charset=utf-8",
                        headers={"X-Log-Size": str(size)})  # fmt: skip

    @app.post("/tasks/{task_id}/pause", response_model=TaskRecord)
    def pause_task(task_id: str) -> Response:
        return _json(service.control.pause_task(task_id, True))

    @app.post("/tasks/{task_id}/resume", response_model=TaskRecord)
    def resume_task(task_id: str) -> Response:
        return _json(service.control.pause_task(task_id, False))

    @app.post("/queues/{label}/pause")
    def pause_label(label: str) -> dict[str, Any]:
        return service.control.pause_label(label, True)

    @app.post("/queues/{label}/resume")
    def resume_label(label: str) -> dict[str, Any]:
        return service.control.pause_label(label, False)

    @app.get("/workflows")
    def list_workflows() -> list[Workflow]:
        return list(defined.values())

    @app.post("/workflows/{name}/runs", status_code=201)
    def run_workflow(name: str, body: WorkflowRunRequest, request: Request) -> WorkflowRun:
        if name not in defined:
            known = ", ".join(sorted(defined)) or "none"
            raise UnknownWorkflow(f"no workflow named {name!r} (defined: {known})")
        run = service.workflows.start(defined[name], body.file, _caller(request))
        request.state.audit_task_id = ",".join(run.tasks)
        return run

    @app.get("/workflows/runs/{run_id}")
    def workflow_status(run_id: str) -> dict[str, Any]:
        return service.workflows.status(run_id)

    @app.get("/cron")
    def get_cron() -> list[dict[str, Any]]:
        return cron()

    @app.get("/queues")
    def get_queues() -> dict[str, Any]:
        return queues()

    @app.get("/me")
    def whoami(request: Request) -> dict[str, Any]:
        """The caller as the daemon sees it (SO_PEERCRED) and its role: the dashboard shows
        only the buttons that role may use."""
        caller = _caller(request)
        if caller is None:
            return {"uid": None, "gid": None, "role": "admin"}  # no peer: in-process tests
        role = access[0].role_of(caller.uid, caller.gid) if access is not None else "admin"
        return {"uid": caller.uid, "gid": caller.gid, "role": role}

    @app.get("/events")
    def get_events(request: Request, after: int | None = Query(None, ge=0)) -> Response:
        """Server-Sent Events: task changes and landed frames, numbered; resumable with
        `Last-Event-ID` or `?after=N` (without either: from now on)."""
        if events is None:
            raise PiRenderError("this daemon has no event stream")
        resumed = event_number(request.headers.get("last-event-id"))
        start = after if after is not None else (resumed if resumed is not None else events.last)
        return StreamingResponse(events.stream(start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    @app.get("/metrics")
    def get_metrics() -> Response:
        """Prometheus text format (docs/metrics.md)."""
        return Response(metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/hosts")
    def get_hosts() -> list[dict[str, Any]]:
        """The farm's hosts (state, tags, Blender, running tasks, last seen, blocklists)."""
        return hosts()

    @app.get("/tasks/{task_id}/chunks", response_model=list[TaskRecord])
    def get_chunks(task_id: str) -> Response:
        service.get(task_id)  # 404 for an unknown job
        return _json_list(service.records.chunks_of(task_id))

    @app.post("/farm/unblock")
    def farm_unblock(body: UnblockRequest) -> dict[str, Any]:
        if unblock is None:
            raise PiRenderError("not in farm mode: there are no blocklists")
        return unblock(body.job, body.host)

    @app.get("/task-types")
    def get_task_types() -> dict[str, Any]:
        return {
            name: {"label": cls.default_label, "args": cls.args_model.model_json_schema()}
            for name, cls in sorted(task_types().items())
        }

    @app.get("/api/tasks/{task_id}/status")
    def task_status(task_id: str) -> TaskStatusView:
        record = service.get(task_id)
        return TaskStatusView(
            task_id=record.id,
            status=record.status,
            progress=record.progress,
            progress_message=record.progress_message,
            attempts=record.attempts,
            error=record.error.message if record.error else None,
        )

    return app
