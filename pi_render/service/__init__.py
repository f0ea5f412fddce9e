"""TaskService: what every interface (API, CLI, cron) may do with tasks, checked at the edge.
Its parts: the submit core (`submit`), admission, control, uploads, workflows, children."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pi_render.clock import Clock
from pi_render.data_dir import DataDir
from pi_render.identity import Caller
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.failed import FailedTask
from pi_render.manifest.frames import FrameStore
from pi_render.manifest.records import TaskIdGenerator
from pi_render.queue.router import Router
from pi_render.service.children import Children
from pi_render.service.control import TaskControl
from pi_render.service.controls import SubmitControls, no_controls
from pi_render.service.jobs import Jobs
from pi_render.service.submit import Request, Submitted, Submitter
from pi_render.service.uploads import Uploads
from pi_render.service.workflow_runs import WorkflowService
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workers.running import RunningTasks
from pi_render.workflows import Workflow, WorkflowRun, WorkflowRuns

__all__ = ["Caller", "SubmitControls", "Submitted", "TaskService"]


class TaskService:
    """Submit, look up, list, control. The record is durable before the queue sees the task."""

    def __init__(self, records: RecordStore, router: Router, running: RunningTasks,
                 clock: Clock, paths: DataDir, output_root: Path, *,
                 controls: SubmitControls | None = None,
                 workflow_runs: WorkflowRuns | None = None,
                 forget_files: Callable[[TaskRecord], None] | None = None,
                 frames: FrameStore | None = None, farm: bool = False) -> None:  # fmt: skip
        self.records, self.router, self.clock = records, router, clock
        self.paths = paths
        self._controls = controls or no_controls()
        ids = TaskIdGenerator(clock)
        self.children = Children(records, router, clock)
        self.submitter = Submitter(records, router, running, clock, ids, paths, output_root,
                                   lambda: self._controls, self.children)  # fmt: skip
        self.control = TaskControl(records, router, running, clock, forget_files, farm)
        self.jobs = Jobs(records, frames, clock, self.control.cancel) if frames else None
        self.uploads = Uploads(records, self.submitter, ids)
        self.workflows = WorkflowService(records, self.submitter, ids, workflow_runs,
                                         self.control.cancel)  # fmt: skip

    def reconfigure(self, controls: SubmitControls) -> None:
        """A reload's new controls, swapped in whole (submits in flight keep the old ones)."""
        self._controls = controls

    def submit(self, type_name: str, args: Any, priority: Priority = Priority.NORMAL,
               label: str | None = None, origin: str | None = None,
               timeout_s: float | None = None, parent: str | None = None, force: bool = False,
               requires: dict[str, Any] | None = None,
               caller: Caller | None = None) -> Submitted:  # fmt: skip
        """Validate, record, enqueue (a child of an unfinished parent waits for it)."""
        extra = {"origin": origin, "timeout_s": timeout_s, "parent": parent, "requires": requires}
        requests: list[Request] = [(type_name, args, priority, label)]
        return self.submitter.submit_many(requests, extra=extra, force=force, caller=caller)[0]

    def submit_many(self, requests: list[Request], caller: Caller | None = None,
                    force: bool = False) -> list[Submitted]:  # fmt: skip
        return self.submitter.submit_many(requests, force=force, caller=caller)

    def on_record(self, record: TaskRecord) -> None:
        self.children.on_record(record)
        if self.jobs is not None:
            self.jobs.on_record(record)

    def get(self, task_id: str) -> TaskRecord:
        return self.records.get(task_id)

    def failed_tasks(self) -> list[FailedTask]:
        """Tasks waiting for their next attempt and dead ones, newest first: their records say."""
        failing = [*self.records.with_status(TaskStatus.RETRYING),
                   *self.records.with_status(TaskStatus.FAILED)]  # fmt: skip
        return [FailedTask.of(r) for r in sorted(failing, key=lambda r: r.id, reverse=True)]

    def log(self, task_id: str, offset: int = 0, limit: int = 1 << 20) -> tuple[str, int]:
        """Up to `limit` bytes of the task's log from `offset`, and the log's size."""
        self.records.get(task_id)  # 404 for an unknown task
        path = self.paths.log_of(task_id)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(min(offset, size))
                chunk = handle.read(limit)
        except FileNotFoundError:
            return "", 0
        return chunk.decode("utf-8", "replace"), min(offset, size) + len(chunk)

    def stale(self, older_than_s: float) -> list[dict[str, Any]]:
        """Running tasks whose heartbeat is older than `older_than_s`."""
        now = self.clock.now()
        return [
            {"task_id": r.id, "type": r.type, "heartbeat_at": r.heartbeat_at}
            for r in self.records.with_status(TaskStatus.RUNNING)
            if r.heartbeat_at is None or (now - r.heartbeat_at).total_seconds() > older_than_s
        ]

    # the parts, for callers that know only the service
    def cancel(self, task_id: str) -> TaskRecord:
        return self.control.cancel(task_id)

    def retry(self, task_id: str) -> TaskRecord:
        return self.control.retry(task_id)

    def start_workflow(self, workflow: Workflow, file: str,
                       caller: Caller | None = None) -> WorkflowRun:  # fmt: skip
        return self.workflows.start(workflow, file, caller)

    def workflow_status(self, run_id: str) -> dict[str, Any]:
        return self.workflows.status(run_id)

    def list(self, status: TaskStatus | None = None, type_name: str | None = None,
             limit: int = 50, offset: int = 0) -> list[TaskRecord]:  # fmt: skip
        return self.records.query(status, type_name, limit, offset)
