"""TaskService: what every interface (API, CLI, cron) may do with tasks, checked at the edge."""

import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pi_render.api.access import groups_of
from pi_render.clock import Clock
from pi_render.controls import (
    Limit,
    NotQualified,
    Requirements,
    TooManyQueued,
    check_limit,
    find_duplicate,
    limit_key,
    missing,
)
from pi_render.errors import (
    DiskFull,
    InvalidTaskArgs,
    PiRenderError,
    StorageError,
    TaskNotFound,
    TaskStateConflict,
)
from pi_render.manifest.failed import FailedTask, FailedTaskManifest
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.manifest.writer import is_disk_full
from pi_render.processor.context import StopReason
from pi_render.queue.router import Router
from pi_render.quotas import UPLOAD_FOLDER_BYTES, Quotas, record_bytes
from pi_render.task import lifecycle
from pi_render.task.base import SubmitContext, task_type
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.uploads import make_upload_folder, uploaded_file
from pi_render.workers.running import RunningTasks
from pi_render.workflows import Workflow, WorkflowRun, WorkflowRuns, aggregate, fill

log = logging.getLogger(__name__)


@dataclass
class SubmitControls:
    """Config the service checks each submission against."""

    limits: dict[str, Limit]
    requires: dict[str, Requirements]
    capabilities: Callable[[str], dict[str, Any]]  # label → what its pool offers
    roots: tuple[tuple[Path, ...], tuple[Path, ...]] = ((Path("/"),), (Path("/"),))
    max_queued_per_uid: int | None = None
    min_free_bytes: int = 0
    allow_missing: bool = False  # a render's default when files its .blend needs are missing
    max_snapshot_bytes: int = 64 << 30
    sandboxed: bool = True  # False: no sandbox for Blender, so only the daemon's uid may render
    max_args_bytes: int = 64 << 10  # a task's arguments are kept with its record for weeks
    quota_bytes_per_uid: int | None = None  # records, snapshots and uploads one uid may keep


class TaskService:
    """Submit, look up, list, cancel. The record is durable before the queue sees the task."""

    def __init__(
        self,
        records: TaskRecordManifest,
        router: Router,
        running: RunningTasks,
        clock: Clock,
        spool_dir: Path,
        output_root: Path,
    ) -> None:
        self.spool_dir = spool_dir
        self.uploads_dir = spool_dir.parent / "uploads"
        self.output_root = output_root
        self.failed: FailedTaskManifest | None = None  # set by the daemon
        self.controls: SubmitControls | None = None  # set by the daemon
        self.workflow_runs: WorkflowRuns | None = None  # set by the daemon
        self.forget_files: Callable[[TaskRecord], None] | None = None  # set by the daemon
        self._submit_lock = threading.Lock()
        self.records = records
        self.router = router
        self.running = running
        self.clock = clock
        self.ids = TaskIdGenerator(clock)

    def submit(
        self,
        type_name: str,
        args: Any,
        priority: Priority = Priority.NORMAL,
        label: str | None = None,
        origin: str | None = None,
        timeout_s: float | None = None,
        parent: str | None = None,
        force: bool = False,
        requires: dict[str, Any] | None = None,
        submitted_by: dict[str, int] | None = None,
    ) -> TaskRecord:
        """Validate, record, enqueue (a child of an unfinished parent waits for it).

        Raises:
            UnknownTaskType, InvalidTaskArgs, NoConsumer: nothing is written then.
        """
        if parent is not None:
            self._check_parent(parent)
        extra = {"origin": origin, "timeout_s": timeout_s, "parent": parent, "requires": requires,
                 "submitted_by": submitted_by}  # fmt: skip
        requests = [(type_name, args, priority, label)]
        return self.submit_many(requests, extra=extra, force=force)[0]

    def submit_many(
        self,
        requests: list[tuple[str, Any, Priority, str | None]],
        task_id: str | None = None,
        extra: dict[str, Any] | None = None,
        force: bool = False,
    ) -> list[TaskRecord]:
        """All or nothing: every request is validated before any is written; one commit.

        Snapshots are taken (files copied, zips unpacked) before any lock: one user's 20 GiB
        copy never holds back another's submit. Only the checks that count what is there
        (limits, dedup, per-uid caps and quotas) and the commit run one submit at a time.
        A render identical to a live or completed one returns that one (unless `force`).
        """
        self._check_room()
        prepared = self._prepare_all(requests, task_id, extra or {})
        try:
            with self._submit_lock if self._counted(prepared) else nullcontext():
                records, new = self._control_all(prepared, force, len(requests) > 1)
                try:
                    self.records.create_many(new)
                except (StorageError, sqlite3.Error) as exc:  # some may be on disk after all
                    raise self._withdraw(new, exc) from None
        except Exception:
            for record in prepared:
                if self.records.find(record.id) is None:
                    shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
            raise
        for record in new:
            if record.parent is not None and not self._release(record):
                continue  # waits for its parent
            try:
                self.router.put(record)
            except (StorageError, sqlite3.Error) as exc:
                raise self._withdraw(new, exc) from None
            log.debug("task submitted", extra={"task_id": record.id, "type": record.type})
        return records

    def _prepare_all(self, requests: list[tuple[str, Any, Priority, str | None]],
                     task_id: str | None, extra: dict[str, Any]) -> list[TaskRecord]:  # fmt: skip
        """Parse and prepare (snapshot) each request, as its submitter; no lock is held. On
        failure nothing is left behind and the error names the request of a batch."""
        who = extra.get("submitted_by")
        reader = (who["uid"], groups_of(who["uid"], who["gid"])) if who else None
        fields = {k: v for k, v in extra.items() if v is not None}
        prepared: list[TaskRecord] = []
        for index, (type_name, args, priority, label) in enumerate(requests):
            try:
                record = self._new_record(type_name, args, priority, label, task_id, reader)
                prepared.append(record.model_copy(update=fields) if fields else record)
            except Exception as exc:  # anything: leave no snapshot behind, then say why
                for made in prepared:
                    shutil.rmtree(self.spool_dir / made.id, ignore_errors=True)
                if isinstance(exc, PiRenderError) and len(requests) > 1:
                    exc.args = (f"task {index}: {exc}",)
                raise
        return prepared

    def _control_all(self, prepared: list[TaskRecord], force: bool,
                     batch: bool) -> tuple[list[TaskRecord], list[TaskRecord]]:  # fmt: skip
        """What to return (in order) and what to write: duplicates answer with the task that is
        already there and leave no snapshot of their own."""
        records: list[TaskRecord] = []
        new: list[TaskRecord] = []
        for index, record in enumerate(prepared):
            try:
                existing = self._controlled(record, new, force)
            except PiRenderError as exc:
                if batch:
                    exc.args = (f"task {index}: {exc}",)
                raise
            if existing is not None:
                shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
                records.append(existing)
                log.info("identical render already there", extra={"task_id": existing.id})
            else:
                records.append(record)
                new.append(record)
        return records, new

    def _counted(self, prepared: list[TaskRecord]) -> bool:
        """Would a limit, a dedup, a per-uid cap or a quota count these (so the next submitter
        must wait until they are written)?"""
        limits = self.controls.limits if self.controls else {}
        return any(r.type in limits or r.content_key is not None or self._uid_capped(r)
                   or self._quotas().applies((r.submitted_by or {}).get("uid"))
                   for r in prepared)  # fmt: skip

    def _quotas(self) -> Quotas:
        limit = self.controls.quota_bytes_per_uid if self.controls else None
        return Quotas(self.records.bytes_of_uid, lambda i: self.records.find(i) is not None,
                      self.uploads_dir, limit)  # fmt: skip

    def _uid_capped(self, record: TaskRecord) -> bool:
        """Does `max_queued_per_uid` count this task? (Root is exempt.)"""
        who = record.submitted_by
        cap = self.controls.max_queued_per_uid if self.controls else None
        return cap is not None and who is not None and who["uid"] != 0

    def _withdraw(self, new: list[TaskRecord], exc: Exception) -> StorageError:
        """The disk refused a record or a queue row: all or nothing, so every task of the request
        that got anywhere is taken off its queue and cancelled with the reason (one that cannot
        even be cancelled stays pending, and the next start queues it). Returns the error."""
        reason = f"withdrawn at submit: the disk refused to store it ({exc})"
        now = self.clock.now()
        for record in new:
            try:
                queue = self.router.locate(record.id)
                if queue is not None:
                    queue.remove(record.id)  # queued before the refusal: all or nothing
                if self.records.find(record.id) is None:
                    shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
                    continue
                self.running.request_stop(record.id, StopReason.CANCEL)  # if a worker took it
                self.records.change(record.id, lambda r: lifecycle.cancel(r, now, reason))
            except (PiRenderError, sqlite3.Error) as failure:
                log.error("could not withdraw a task; it runs after the next start: %s", failure,
                          extra={"task_id": record.id})  # fmt: skip
        kind = DiskFull if is_disk_full(exc) else StorageError
        return kind(f"the data disk refused to store the task ({exc}); nothing of it will run "
                    f"(withdrawn): free some space and submit it again")  # fmt: skip

    def _new_record(
        self,
        type_name: str,
        args: Any,
        priority: Priority,
        label: str | None,
        task_id: str | None = None,
        reader: tuple[int, frozenset[int]] | None = None,
    ) -> TaskRecord:
        cls = task_type(type_name)
        controls = self.controls or SubmitControls({}, {}, lambda label: {})
        size = len(json.dumps(args, default=str))
        if size > controls.max_args_bytes:
            raise InvalidTaskArgs(f"the arguments take {size:,} bytes, more than max_args_bytes "
                                  f"({controls.max_args_bytes:,}): pass a file's path instead",
                                  [{"field": "(args)", "message": "too large"}])  # fmt: skip
        parsed = cls.parse_args(args)
        label = label or cls.default_label
        self.router.queue_for(label)  # refuse before writing anything
        task_id = task_id or self.ids.new()
        context = SubmitContext(
            task_id, self.spool_dir / task_id, self.output_root, *controls.roots, reader,
            store=self.spool_dir.parent / "store", allow_missing=controls.allow_missing,
            max_snapshot_bytes=controls.max_snapshot_bytes, sandboxed=controls.sandboxed,
            min_free_bytes=controls.min_free_bytes, upload=self.uploads_dir / task_id,
        )  # fmt: skip
        parsed = cls.prepare(parsed, context)
        return TaskRecord(
            id=task_id,
            type=type_name,
            label=label,
            priority=priority,
            args=parsed.model_dump(mode="json"),
            created_at=self.clock.now(),
            content_key=cls.content_key(parsed),
        )

    def _check_room(self) -> None:
        """Refuse work before the data disk is so full that writing it could fail halfway."""
        need = self.controls.min_free_bytes if self.controls else 0
        if need <= 0:
            return
        free = shutil.disk_usage(self.spool_dir.parent).free
        if free < need:
            raise DiskFull(
                f"the data disk has {free // (1 << 20)} MiB free, less than min_free_bytes "
                f"({need // (1 << 20)} MiB): free some space; nothing was submitted"
            )

    def _controlled(
        self, record: TaskRecord, batch: list[TaskRecord], force: bool
    ) -> TaskRecord | None:
        """Qualifiers, dedup and limits; returns an identical existing task, or None."""
        controls = self.controls
        if controls is None:
            return None
        needs = {**controls.requires.get(record.type, Requirements()).model_dump(),
                 **{k: v for k, v in (record.requires or {}).items() if v}}  # fmt: skip
        lacks = missing(Requirements.model_validate(needs), controls.capabilities(record.label))
        if lacks:
            raise NotQualified(f"no worker pool can run this {record.type} task on label "
                               f"{record.label!r}: it lacks {', '.join(lacks)}")  # fmt: skip
        content = record.content_key
        if content is not None and not force:
            existing = find_duplicate(self.records, record)
            if existing is not None:
                return existing
        who = record.submitted_by
        if who is not None and controls.max_queued_per_uid is not None and self._uid_capped(record):
            queued = self.records.live_count_of_uid(who["uid"]) + sum(
                1 for earlier in batch if (earlier.submitted_by or {}).get("uid") == who["uid"]
            )  # a batch counts its own tasks too
            if queued >= controls.max_queued_per_uid:
                raise TooManyQueued(f"uid {who['uid']} already has {queued} tasks waiting or "
                                    f"running (max_queued_per_uid = "
                                    f"{controls.max_queued_per_uid})")  # fmt: skip
        if who is not None:  # a batch counts its own tasks' bytes too
            mine = [e for e in batch if (e.submitted_by or {}).get("uid") == who["uid"]]
            self._quotas().check(who["uid"], sum(map(record_bytes, [*mine, record])))
        limit = controls.limits.get(record.type)
        if limit is not None:
            record.limit_key = limit_key(limit, record, content)
            check_limit(self.records, limit, record, record.limit_key, batch)
        return None

    def _check_parent(self, parent: str) -> None:
        record = self.records.latest(parent)  # TaskNotFound names it
        if record.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise TaskStateConflict(f"parent task {parent} is {record.status.value}")

    def _release(self, child: TaskRecord) -> bool:
        """Hand a waiting child its parent's result, or cancel it with the reason; True when it
        may be enqueued now."""
        parent = self.records.latest(child.parent or "")
        if parent.status is TaskStatus.COMPLETED:
            update = {"parent_result": parent.result}
            released = self.records.change(
                child.id,
                lambda r: (
                    r.model_copy(update=update)
                    if r.status is TaskStatus.PENDING and r.parent_result is None
                    else None
                ),
            )
            return released is not None
        if parent.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            reason = f"parent task {parent.id} {parent.status.value}"
            self.records.change(child.id, lambda r: lifecycle.cancel(r, self.clock.now(), reason))
        return False

    def on_record(self, record: TaskRecord) -> None:
        """Records listener: a task that ended releases (or cancels) its waiting children."""
        if not record.status.is_final:
            return
        try:
            for child in self.records.children(record.id):
                if child.status is TaskStatus.PENDING and self.router.locate(child.id) is None:
                    if self._release(child):
                        self.router.put(self.records.latest(child.id))
        except PiRenderError:  # never break the write that told us; recovery retries at start
            log.exception("could not release the children", extra={"task_id": record.id})

    def start_workflow(self, workflow: Workflow, file: str,
                       submitted_by: dict[str, int] | None = None) -> WorkflowRun:  # fmt: skip
        """Submit every step, each the child of the one before, as the caller; all or nothing."""
        if self.workflow_runs is None:
            raise PiRenderError("workflows are not available in this service")
        run_id = self.ids.new()
        made: list[TaskRecord] = []
        try:
            for index, step in enumerate(workflow.steps):
                record = self.submit(
                    step.type, fill(step.args, file), label=step.label,
                    origin=f"workflow:{run_id}:{index}", parent=made[-1].id if made else None,
                    force=True, submitted_by=submitted_by,
                )  # fmt: skip
                made.append(record)
        except PiRenderError as exc:
            for record in made:
                self.cancel(record.id)
            exc.args = (f"workflow {workflow.name!r}: {exc}",)  # its own status (403, 422…)
            raise
        run = WorkflowRun(run_id=run_id, name=workflow.name, file=file,
                          tasks=[r.id for r in made], created_at=self.clock.now())  # fmt: skip
        self.workflow_runs.add(run)
        log.info("workflow started", extra={"workflow": workflow.name, "run": run_id})
        return run

    def workflow_status(self, run_id: str) -> dict[str, Any]:
        if self.workflow_runs is None:
            raise TaskNotFound(f"no workflow run with id {run_id!r}")
        run = self.workflow_runs.get(run_id)
        steps = [self.records.get(task_id) for task_id in run.tasks]
        return {
            **run.model_dump(mode="json"),
            "status": aggregate([s.status for s in steps]),
            "steps": [{"task_id": s.id, "type": s.type, "status": s.status.value,
                       "result": s.result, "error": s.error.message if s.error else None}
                      for s in steps],
        }  # fmt: skip

    def init_upload(self, file_name: str,
                    caller: dict[str, int] | None = None) -> tuple[str, Path]:  # fmt: skip
        """The seed's init_new_task: a task id and the path to upload its file to, in a folder
        only the caller may write.

        Raises:
            QuotaExceeded: the caller keeps its quota's worth already.
        """
        self._quotas().check((caller or {}).get("uid"), UPLOAD_FOLDER_BYTES)
        task_id = self.ids.new()
        return task_id, make_upload_folder(self.uploads_dir, task_id, caller) / file_name

    def run_upload(self, task_id: str, args: dict[str, Any], priority: Priority,
                   submitted_by: dict[str, int] | None = None) -> TaskRecord:  # fmt: skip
        """The seed's run_task: render what was uploaded for `task_id`, as the caller, who must
        be the uploader.

        Raises:
            TaskNotFound, PathNotAllowed (see `uploaded_file`); TaskStateConflict: already run.
        """
        source = uploaded_file(self.uploads_dir, task_id, submitted_by)
        try:
            self.records.get(task_id)
        except TaskNotFound:
            pass
        else:
            raise TaskStateConflict(f"task {task_id} was already run")
        request = ("render", {**args, "source": str(source)}, priority, None)
        return self.submit_many([request], task_id=task_id,
                                extra={"submitted_by": submitted_by})[0]  # fmt: skip

    def retry(self, task_id: str) -> TaskRecord:
        """Requeue a dead or waiting task now, with a fresh attempt budget.

        Raises:
            TaskNotFound; TaskStateConflict unless the task is failed or retrying.
        """
        with self.records.lock:
            record = self.records.change(task_id, lifecycle.retry_now)
            if record is None:
                status = self.records.latest(task_id).status.value
                raise TaskStateConflict(
                    f"task {task_id} is {status}; only failed or retrying tasks can be retried"
                )
        if self.router.locate(task_id) is None:
            self.router.put(record)
        if self.failed is not None:
            self.failed.remove(task_id)
        log.info("task retried by hand", extra={"task_id": task_id})
        return record

    def forget(self, task_id: str) -> TaskRecord:
        """Delete a finished task's record, log, snapshot and upload (its outputs stay): the
        bytes it kept stop counting against its submitter's quota.

        Raises:
            TaskNotFound; TaskStateConflict while it is pending, running or retrying.
        """
        with self.records.lock:
            record = self.records.latest(task_id)
            if not record.status.is_final:
                raise TaskStateConflict(f"task {task_id} is {record.status.value}: cancel it "
                                        f"first, then forget it")  # fmt: skip
            if self.forget_files is not None:
                self.forget_files(record)
        log.info("task forgotten", extra={"task_id": task_id})
        return record

    def failed_tasks(self) -> list[FailedTask]:
        return self.failed.all() if self.failed is not None else []

    def log(self, task_id: str, offset: int = 0, limit: int = 1 << 20) -> tuple[str, int]:
        """Up to `limit` bytes of the task's log from `offset`, and the log's size."""
        self.records.get(task_id)  # 404 for an unknown task
        path = self.spool_dir.parent / "logs" / f"{task_id}.log"
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(min(offset, size))
                chunk = handle.read(limit)
        except FileNotFoundError:
            return "", 0
        return chunk.decode("utf-8", "replace"), min(offset, size) + len(chunk)

    def pause_task(self, task_id: str, paused: bool) -> TaskRecord:
        """SIGSTOP (or SIGCONT) a running render's process group.

        Raises:
            TaskNotFound; TaskStateConflict when the task is not running or cannot pause.
        """
        record = self.records.latest(task_id)
        if record.status is not TaskStatus.RUNNING or not self.running.set_paused(task_id, paused):
            raise TaskStateConflict(
                f"task {task_id} is {record.status.value}"
                + ("" if record.status is not TaskStatus.RUNNING else " and cannot pause")
                + "; only a running render can be paused or resumed"
            )
        log.info("task %s", "paused" if paused else "resumed", extra={"task_id": task_id})
        return self.records.change(task_id, lambda r: lifecycle.set_paused(r, paused)) or record

    def pause_label(self, label: str, paused: bool) -> dict[str, Any]:
        self.router.set_paused(label, paused)
        log.info("label %s", "paused" if paused else "resumed", extra={"label": label})
        return {"label": label, "paused": paused}

    def stale(self, older_than_s: float) -> list[dict[str, Any]]:
        """Running tasks whose heartbeat is older than `older_than_s`."""
        now = self.clock.now()
        return [
            {"task_id": r.id, "type": r.type, "heartbeat_at": r.heartbeat_at}
            for r in self.records.with_status(TaskStatus.RUNNING)
            if r.heartbeat_at is None or (now - r.heartbeat_at).total_seconds() > older_than_s
        ]

    def get(self, task_id: str) -> TaskRecord:
        return self.records.get(task_id)

    def list(
        self,
        status: TaskStatus | None = None,
        type_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskRecord]:
        return self.records.query(status, type_name, limit, offset)

    def cancel(self, task_id: str) -> TaskRecord:
        """A pending task is cancelled and leaves its queue; a running one is asked to stop.

        Raises:
            TaskNotFound; TaskStateConflict when the task has already ended.
        """
        now = self.clock.now()
        with self.records.lock:
            record = self.records.latest(task_id)
            if record.status.is_final:
                raise TaskStateConflict(
                    f"task {task_id} has already ended ({record.status.value}); nothing to cancel"
                )
            if record.status is TaskStatus.RUNNING:
                self.running.request_stop(task_id, StopReason.CANCEL)
                log.info("cancel requested for running task", extra={"task_id": task_id})
                return record
            cancelled = self.records.change(
                task_id, lambda r: lifecycle.cancel(r, now, "cancelled before it started")
            )
        queue = self.router.locate(task_id)
        if queue is not None:
            queue.remove(task_id)  # if a worker took it meanwhile, it sees the final record
        log.info("pending task cancelled", extra={"task_id": task_id})
        return cancelled or self.records.get(task_id)
