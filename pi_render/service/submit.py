"""The submit core: validate and prepare (snapshot) each task as its caller, outside any lock;
then admission and one durable write, one submit at a time; then the queue."""

import json
import logging
import shutil
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from pi_render.clock import Clock
from pi_render.data_dir import DataDir
from pi_render.errors import (
    DiskFull,
    InvalidTaskArgs,
    PiRenderError,
    StorageError,
    TaskStateConflict,
)
from pi_render.identity import Caller
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.records import TaskIdGenerator
from pi_render.manifest.writer import is_disk_full
from pi_render.processor.context import StopReason
from pi_render.processor.disk_space import FrameSizes
from pi_render.queue.router import Router
from pi_render.service.admission import Admission
from pi_render.service.children import Children
from pi_render.service.controls import SubmitControls
from pi_render.service.jobs import split
from pi_render.service.quotas import record_bytes
from pi_render.task import lifecycle
from pi_render.task.base import SubmitContext, task_type
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workers.running import RunningTasks

log = logging.getLogger(__name__)

Request = tuple[str, Any, Priority, str | None]  # type, args, priority, label


class Submitted(NamedTuple):
    """A submitted task, and whether this submit made it (False: an identical one was there)."""

    record: TaskRecord
    created: bool


class Submitter:
    """All or nothing: every request is validated before any is written; one commit."""

    def __init__(self, records: RecordStore, router: Router, running: RunningTasks,
                 clock: Clock, ids: TaskIdGenerator, paths: DataDir, output_root: Path,
                 controls: Callable[[], SubmitControls], children: Children) -> None:  # fmt: skip
        self.records, self.router, self.running, self.clock = records, router, running, clock
        self.ids, self.controls, self.children = ids, controls, children
        self.paths, self.output_root = paths, output_root
        self.spool_dir, self.uploads_dir, self.store_dir = paths.spool, paths.uploads, paths.store
        self.admission = Admission(records, controls, self.uploads_dir)
        self._lock = threading.Lock()  # admission counts what is there: one at a time

    def submit_many(self, requests: list[Request], task_id: str | None = None,
                    extra: dict[str, Any] | None = None, force: bool = False,
                    caller: Caller | None = None) -> list[Submitted]:  # fmt: skip
        """Snapshots are taken (files copied, zips unpacked) before any lock: one user's 20 GiB
        copy never holds back another's submit. A render identical to a live or completed one
        returns that one (unless `force`).

        Raises:
            UnknownTaskType, InvalidTaskArgs, NoConsumer, a refusal: nothing is written then.
        """
        self._check_room()
        fields = {k: v for k, v in (extra or {}).items() if v is not None}
        if "parent" in fields:
            self.check_parent(fields["parent"])
        if caller is not None:
            fields["submitted_by"] = caller.submitted_by
        prepared = self._prepare_all(requests, task_id, fields, caller)
        try:
            with self._lock if self.admission.counted(prepared) else nullcontext():
                answers = self._admit_all(prepared, force, len(requests) > 1)
                new = self._with_chunks([answer.record for answer in answers if answer.created])
                jobs = {record.id: record for record in new if record.chunks}
                answers = [Submitted(jobs.get(a.record.id, a.record), a.created) for a in answers]
                try:
                    self.records.create_many(new)
                except StorageError as exc:  # some may be on disk after all
                    raise self._withdraw(new, exc) from None
        except Exception:
            for record in prepared:
                if self.records.find(record.id) is None:
                    shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
            raise
        for record in new:
            if record.chunks:
                continue  # a job: its chunks are queued, never itself
            if record.parent is not None and not self.children.release(record):
                continue  # waits for its parent
            try:
                self.router.put(record)
            except StorageError as exc:
                raise self._withdraw(new, exc) from None
            log.debug("task submitted", extra={"task_id": record.id, "type": record.type})
        return answers

    def _with_chunks(self, new: list[TaskRecord]) -> list[TaskRecord]:
        """Each render job that asks for chunks (or gets them from the config) is written as
        the job's record (marked with its chunk count) followed by its chunk tasks."""
        written: list[TaskRecord] = []
        for record in new:
            size = record.args.get("chunk_size") if record.type == "render" else None
            if size is None and record.type == "render":
                size = self.controls().chunk_size
            alone = record.job is None and record.parent is None  # a chained step stays whole
            chunks = split(record, int(size or 0), self.ids.new) if alone else []
            if chunks:
                written.append(record.model_copy(update={"chunks": len(chunks)}))
                written.extend(chunks)
            else:
                written.append(record)
        return written

    def _prepare_all(self, requests: list[Request], task_id: str | None, fields: dict[str, Any],
                     caller: Caller | None) -> list[TaskRecord]:  # fmt: skip
        """Parse and prepare (snapshot) each request as `caller`; no lock is held. On failure
        nothing is left behind and the error names the request of a batch."""
        prepared: list[TaskRecord] = []
        room = self.admission.room_of(caller)  # summed once: what their snapshots may copy
        if room <= 0 and caller is not None:
            self.admission.quotas().check(caller.uid, 1)  # refused before any copy
        for index, (type_name, args, priority, label) in enumerate(requests):
            this_id = task_id or self.ids.new()
            try:
                record = self._new_record(type_name, args, priority, label, this_id, caller, room,
                                          alone=len(requests) == 1)  # fmt: skip
                prepared.append(record.model_copy(update=fields) if fields else record)
            except Exception as exc:  # anything: leave no snapshot behind, then say why
                for made in [*(r.id for r in prepared), this_id]:
                    shutil.rmtree(self.spool_dir / made, ignore_errors=True)
                if isinstance(exc, PiRenderError) and len(requests) > 1:
                    exc.args = (f"task {index}: {exc}",)
                raise
        return prepared

    def _admit_all(self, prepared: list[TaskRecord], force: bool,
                   batch: bool) -> list[Submitted]:  # fmt: skip
        """Duplicates answer with the task already there and leave no snapshot of their own."""
        answers: list[Submitted] = []
        new: list[TaskRecord] = []
        quotas = self.admission.quotas()
        kept: dict[int, int] = {}  # bytes of each submitter's new tasks so far (quotas only)
        for index, record in enumerate(prepared):
            uid = (record.submitted_by or {}).get("uid")
            try:
                existing = self.admission.admit(record, new, force, kept.get(uid or 0, 0))
            except PiRenderError as exc:
                if batch:
                    exc.args = (f"task {index}: {exc}",)
                raise
            if existing is not None:
                shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
                answers.append(Submitted(existing, False))
                log.info("identical render already there", extra={"task_id": existing.id})
            else:
                answers.append(Submitted(record, True))
                new.append(record)
                if uid is not None and quotas.applies(uid):
                    kept[uid] = kept.get(uid, 0) + record_bytes(record)
        return answers

    def _new_record(self, type_name: str, args: Any, priority: Priority, label: str | None,
                    task_id: str, caller: Caller | None, room: int,
                    alone: bool = True) -> TaskRecord:  # fmt: skip
        cls = task_type(type_name)
        controls = self.controls()
        size = len(json.dumps(args, default=str))
        if size > controls.max_args_bytes:
            raise InvalidTaskArgs(f"the arguments take {size:,} bytes, more than max_args_bytes "
                                  f"({controls.max_args_bytes:,}): pass a file's path instead",
                                  [{"field": "(args)", "message": "too large"}])  # fmt: skip
        parsed = cls.parse_args(args)
        label = label or cls.default_label
        self.router.queue_for(label)  # refuse before writing anything
        snapshot_cap = min(controls.max_snapshot_bytes, room)
        context = SubmitContext(
            task_id, self.spool_dir / task_id, self.output_root, *controls.roots,
            caller.reader if caller else None, store=self.store_dir,
            allow_missing=controls.allow_missing, max_snapshot_bytes=snapshot_cap,
            sandboxed=controls.sandboxed, min_free_bytes=controls.min_free_bytes,
            upload=self.uploads_dir / task_id, frame_size=FrameSizes(self.paths.frame_sizes).get,
            trial_frame=controls.trial_frame if alone else None,  # one trial a request
        )  # fmt: skip
        parsed = cls.prepare(parsed, context)
        stored = parsed.model_dump(mode="json")
        for key in ("snapshot", "output_dir"):  # farm mode: in the form every host can map
            if isinstance(stored.get(key), str):
                stored[key] = controls.farm_form(stored[key])
        return TaskRecord(id=task_id, type=type_name, label=label, priority=priority,
                          args=stored, created_at=self.clock.now(),
                          content_key=cls.content_key(parsed))  # fmt: skip

    def check_parent(self, parent: str) -> None:
        """Raises TaskNotFound, or TaskStateConflict when the parent can never complete."""
        record = self.records.latest(parent)
        if record.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise TaskStateConflict(f"parent task {parent} is {record.status.value}")

    def _check_room(self) -> None:
        """Refuse work before the data disk is so full that writing it could fail halfway."""
        need = self.controls().min_free_bytes
        if need <= 0:
            return
        free = shutil.disk_usage(self.paths.root).free
        if free < need:
            raise DiskFull(
                f"the data disk has {free // (1 << 20)} MiB free, less than min_free_bytes "
                f"({need // (1 << 20)} MiB): free some space; nothing was submitted"
            )

    def _withdraw(self, new: list[TaskRecord], exc: Exception) -> StorageError:
        """The disk refused a record or a queue row: all or nothing, so every task of the request
        that got anywhere is taken off its queue and cancelled with the reason (one that cannot
        even be cancelled stays pending, and the next start queues it). Returns the error."""
        reason = f"withdrawn at submit: the disk refused to store it ({exc})"
        now = self.clock.now()
        for record in new:
            try:
                self.router.remove(record.id)  # queued before the refusal: all or nothing
                if self.records.find(record.id) is None:
                    shutil.rmtree(self.spool_dir / record.id, ignore_errors=True)
                    continue
                self.running.request_stop(record.id, StopReason.CANCEL)  # if a worker took it
                self.records.change(record.id, lambda r: lifecycle.cancel(r, now, reason))
            except PiRenderError as failure:
                log.error("could not withdraw a task; it runs after the next start: %s", failure,
                          extra={"task_id": record.id})  # fmt: skip
        kind = DiskFull if is_disk_full(exc) else StorageError
        return kind(f"the data disk refused to store the task ({exc}); nothing of it will run "
                    f"(withdrawn): free some space and submit it again")  # fmt: skip
