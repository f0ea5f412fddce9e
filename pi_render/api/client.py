"""A typed client for the daemon's socket API (httpx over a Unix socket)."""

import builtins
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pi_render.clock import SYSTEM
from pi_render.errors import DaemonUnreachable, PiRenderError
from pi_render.task.record import TaskRecord

LONG_POLL_CHUNK_S = 60.0


def _q(part: str) -> str:
    """One path segment, quoted: an id with `/`, `?` or `#` in it stays one segment."""
    return quote(part, safe="")


class ApiError(PiRenderError):
    """Raised when the daemon refuses a request; carries its HTTP status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or body.get("detail") or body))
        self.http_status = status
        self.body = body


class Client:
    """One connection pool to the daemon; every call raises DaemonUnreachable or ApiError."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://pi-render",
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        try:
            extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
            response = self._http.request(method, path, **kw, **extra)
        except (httpx.TransportError, FileNotFoundError) as exc:
            raise DaemonUnreachable(
                f"no pi-render daemon answers on {self.socket_path} ({exc}); start one with "
                f"`pi-render serve` (or `systemctl start pi-render`), or point --socket at it"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        if response.status_code >= 400:
            raise ApiError(
                response.status_code, body if isinstance(body, dict) else {"detail": body}
            )
        return body

    def submit(
        self,
        type_name: str,
        args: dict[str, Any] | None = None,
        priority: str = "normal",
        label: str | None = None,
        timeout_s: float | None = None,
        parent: str | None = None,
        force: bool = False,
        requires: dict[str, Any] | None = None,
    ) -> TaskRecord:
        body: dict[str, Any] = {"type": type_name, "args": args or {}, "priority": priority}
        if force:
            body["force"] = True
        if requires:
            body["requires"] = requires
        if parent:
            body["parent"] = parent
        if label:
            body["label"] = label
        if timeout_s:
            body["timeout_s"] = timeout_s
        return TaskRecord.model_validate(self._call("POST", "/tasks", json=body))

    def submit_many(self, tasks: list[dict[str, Any]]) -> list[TaskRecord]:
        """Submit up to 1000 tasks ({type, args, priority?, label?}) at once: all or none."""
        body = self._call("POST", "/tasks/batch", json={"tasks": tasks})
        return [TaskRecord.model_validate(r) for r in body]

    def render(self, request: dict[str, Any]) -> TaskRecord:
        return TaskRecord.model_validate(self._call("POST", "/render-tasks", json=request))

    def init_new_task(self, data_type: str = "SingleFile") -> tuple[str, Path]:
        body = self._call("POST", "/render-tasks/init_new_task", json={"data_type": data_type})
        return str(body["task_id"]), Path(body["file_path"])

    def run_task(self, task_id: str, **overrides: Any) -> TaskRecord:
        body = self._call("POST", "/render-tasks/run_task", json={"task_id": task_id, **overrides})
        return TaskRecord.model_validate(body)

    def _text(self, path: str, **params: Any) -> httpx.Response:
        """A route that answers in text, not JSON (a log, metrics): the response itself."""
        try:
            response = self._http.get(path, params=params)
        except (httpx.TransportError, FileNotFoundError) as exc:
            raise DaemonUnreachable(f"no pi-render daemon answers on {self.socket_path} ({exc})")
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.json())
        return response

    def log(self, task_id: str, offset: int = 0) -> tuple[str, int]:
        """Log text from `offset` and the offset to continue from."""
        response = self._text(f"/tasks/{_q(task_id)}/log", offset=offset)
        return response.text, int(response.headers.get("X-Log-Size", offset))

    def log_tail(self, task_id: str, limit: int = 8000) -> str:
        """About the last `limit` bytes of the log, from the start of a line: the size is asked
        first, so a long log costs no more than its tail."""
        _, size = self.log(task_id, 1 << 62)  # past the end: nothing but the size
        text, _ = self.log(task_id, max(0, size - limit))
        return text.partition("\n")[2] if size > limit else text

    def metrics(self) -> str:
        """`GET /metrics`: Prometheus text format."""
        return self._text("/metrics").text

    def me(self) -> dict[str, Any]:
        """The caller as the daemon sees it: uid, gid and role."""
        result: dict[str, Any] = self._call("GET", "/me")
        return result

    def get(self, task_id: str) -> TaskRecord:
        return TaskRecord.model_validate(self._call("GET", f"/tasks/{_q(task_id)}"))

    def list(
        self,
        status: str | None = None,
        type_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskRecord]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if type_name:
            params["type"] = type_name
        return [TaskRecord.model_validate(r) for r in self._call("GET", "/tasks", params=params)]

    def cancel(self, task_id: str) -> TaskRecord:
        return TaskRecord.model_validate(self._call("POST", f"/tasks/{_q(task_id)}/cancel"))

    def forget(self, task_id: str) -> TaskRecord:
        """Delete a finished task's record, log and snapshot; returns the record as it was."""
        return TaskRecord.model_validate(self._call("DELETE", f"/tasks/{_q(task_id)}"))

    def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Long-poll until the task ends or `timeout` passes (None: forever); returns the record."""
        deadline = None if timeout is None else SYSTEM.monotonic() + timeout
        while True:
            left = (LONG_POLL_CHUNK_S if deadline is None
                    else max(0.0, deadline - SYSTEM.monotonic()))  # fmt: skip
            chunk = min(LONG_POLL_CHUNK_S, left)
            record = TaskRecord.model_validate(
                self._call(
                    "GET",
                    f"/tasks/{_q(task_id)}/wait",
                    params={"timeout": chunk},
                    timeout=chunk + 30,
                )
            )
            if record.status.is_final or (deadline is not None and SYSTEM.monotonic() >= deadline):
                return record

    def retry(self, task_id: str) -> TaskRecord:
        return TaskRecord.model_validate(self._call("POST", f"/tasks/{_q(task_id)}/retry"))

    def reprioritise(self, task_id: str, priority: str) -> TaskRecord:
        answer = self._call("POST", f"/tasks/{_q(task_id)}/priority", json={"priority": priority})
        return TaskRecord.model_validate(answer)

    def failed(self) -> "builtins.list[dict[str, Any]]":
        result: builtins.list[dict[str, Any]] = self._call("GET", "/failed")
        return result

    def cron(self) -> "builtins.list[dict[str, Any]]":
        result: builtins.list[dict[str, Any]] = self._call("GET", "/cron")
        return result

    def pause(self, target: str, paused: bool = True, label: bool = False) -> Any:
        """Pause (or resume) a routing label, or a running render by task id."""
        verb = "pause" if paused else "resume"
        if label:
            return self._call("POST", f"/queues/{_q(target)}/{verb}")
        return TaskRecord.model_validate(self._call("POST", f"/tasks/{_q(target)}/{verb}"))

    def run_workflow(self, name: str, file: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/workflows/{_q(name)}/runs", json={"file": file}
        )
        return result

    def workflow_status(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/workflows/runs/{_q(run_id)}")
        return result

    def audit(self, since: str | None = None) -> "builtins.list[dict[str, Any]]":
        params = {"since": since} if since else {}
        result: builtins.list[dict[str, Any]] = self._call("GET", "/audit", params=params)
        return result

    def queues(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/queues")
        return result

    def hosts(self) -> "builtins.list[dict[str, Any]]":
        result: builtins.list[dict[str, Any]] = self._call("GET", "/hosts")
        return result

    def chunks(self, job_id: str) -> "builtins.list[TaskRecord]":
        return [
            TaskRecord.model_validate(r) for r in self._call("GET", f"/tasks/{_q(job_id)}/chunks")
        ]

    def unblock(self, job_id: str, host: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/farm/unblock",
                                            json={"job": job_id, "host": host})  # fmt: skip
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result
