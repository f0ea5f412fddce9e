"""Control of submitted tasks: cancel, retry, pause, reprioritise, forget. Every change is one
compare-and-set on the record (`records.change`); no caller holds a storage lock."""

import logging
from collections.abc import Callable

from pi_render.clock import Clock
from pi_render.errors import TaskStateConflict
from pi_render.manifest.contract import RecordStore
from pi_render.processor.context import StopReason
from pi_render.queue.router import Router
from pi_render.task import lifecycle
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workers.running import RunningTasks

log = logging.getLogger(__name__)


class TaskControl:
    def __init__(self, records: RecordStore, router: Router, running: RunningTasks,
                 clock: Clock, forget_files: Callable[[TaskRecord], None] | None = None,
                 farm: bool = False) -> None:  # fmt: skip
        self.records, self.router, self.running, self.clock = records, router, running, clock
        self.forget_files = forget_files
        # farm mode: a running task may be on another host; its record is cancelled at once,
        # and that host (hearing of the final state) stops its Blender
        self.farm = farm

    def cancel(self, task_id: str) -> TaskRecord:
        """A pending task is cancelled and leaves its queue; a running one is asked to stop.

        Raises:
            TaskNotFound; TaskStateConflict when the task has already ended.
        """
        now = self.clock.now()
        running: list[TaskRecord] = []

        def decide(record: TaskRecord) -> TaskRecord | None:
            if record.status.is_final:
                raise TaskStateConflict(f"task {task_id} has already ended "
                                        f"({record.status.value}); nothing to cancel")  # fmt: skip
            if record.chunks:  # a job: cancelled itself; its chunks follow below
                return lifecycle.cancel(record, now, "cancelled")
            if record.status is TaskStatus.RUNNING and self.farm:
                self.running.request_stop(task_id, StopReason.CANCEL)
                return lifecycle.cancel(record, now, "cancelled while running")
            if record.status is TaskStatus.RUNNING:
                running.append(record)
                return None  # its worker ends it
            return lifecycle.cancel(record, now, "cancelled before it started")

        cancelled = self.records.change(task_id, decide)
        if cancelled is None:
            self.running.request_stop(task_id, StopReason.CANCEL)
            log.info("cancel requested for running task", extra={"task_id": task_id})
            return running[-1]  # as it was when asked: the answer is 202, "stopping"
        self.router.remove(task_id)  # if a worker took it meanwhile, it sees the final record
        if cancelled.chunks:
            for chunk in self.records.chunks_of(task_id):
                if not chunk.status.is_final:
                    try:
                        self.cancel(chunk.id)
                    except TaskStateConflict:
                        pass  # it ended meanwhile
        log.info("task cancelled", extra={"task_id": task_id})
        return cancelled

    def retry(self, task_id: str) -> TaskRecord:
        """Requeue a dead or waiting task now, with a fresh attempt budget.

        Raises:
            TaskNotFound; TaskStateConflict unless the task is failed or retrying.
        """
        if self.records.latest(task_id).chunks:
            return self._retry_job(task_id)
        record = self.records.change(task_id, lifecycle.retry_now)
        if record is None:
            status = self.records.latest(task_id).status.value
            raise TaskStateConflict(
                f"task {task_id} is {status}; only failed or retrying tasks can be retried"
            )
        self.router.remove(task_id)  # a retry waiting for its time (a delayed put) goes now
        self.router.put(record)
        log.info("task retried by hand", extra={"task_id": task_id})
        return record

    def _retry_job(self, job_id: str) -> TaskRecord:
        """Its chunks that did not complete run again; they are reset before the job, so an
        update in between cannot see a failed chunk of a job that is pending again."""
        if self.records.latest(job_id).status is not TaskStatus.FAILED:
            raise TaskStateConflict(f"job {job_id} is not failed; only a failed job can be "
                                    "retried")  # fmt: skip
        for chunk in self.records.chunks_of(job_id):
            again = self.records.change(chunk.id, lifecycle.retry_chunk)
            if again is not None:
                self.router.remove(chunk.id)
                self.router.put(again)
        record = self.records.change(job_id, lifecycle.retry_now)
        if record is None:
            raise TaskStateConflict(f"job {job_id} changed meanwhile; look at it again")
        log.info("job retried by hand", extra={"task_id": job_id})
        return record

    def reprioritise(self, task_id: str, priority: Priority) -> TaskRecord:
        """Give a task that waits in its queue another priority (it keeps its place among its
        new peers by id, so by submission time).

        Raises:
            TaskNotFound; TaskStateConflict once a worker has it (or it has ended).
        """
        record = self.records.latest(task_id)
        if record.status is not TaskStatus.PENDING or not self.router.remove(task_id):
            raise TaskStateConflict(f"task {task_id} is {record.status.value} and not waiting in "
                                    f"a queue: only a queued task can change priority")  # fmt: skip
        changed = self.records.change(
            task_id, lambda r: r.model_copy(update={"priority": priority})
        )
        self.router.put(changed or record)
        log.info("task reprioritised", extra={"task_id": task_id, "priority": priority.name})
        return changed or record

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

        def move(current: TaskRecord) -> TaskRecord | None:  # a held render stays stopped
            return lifecycle.set_paused(current, *(self.running.pause_state(task_id)
                                                   or (paused, None)))  # fmt: skip

        return self.records.change(task_id, move) or record

    def pause_label(self, label: str, paused: bool) -> dict[str, object]:
        self.router.set_paused(label, paused)
        log.info("label %s", "paused" if paused else "resumed", extra={"label": label})
        return {"label": label, "paused": paused}

    def forget(self, task_id: str) -> TaskRecord:
        """Delete a finished task's record, log, snapshot and upload (its outputs stay): the
        bytes it kept stop counting against its submitter's quota.

        Raises:
            TaskNotFound; TaskStateConflict while it is pending, running or retrying.
        """

        def only_final(record: TaskRecord) -> None:
            if not record.status.is_final:
                raise TaskStateConflict(f"task {task_id} is {record.status.value}: cancel it "
                                        f"first, then forget it")  # fmt: skip
            if record.job is not None and not self.records.latest(record.job).status.is_final:
                raise TaskStateConflict(f"task {task_id} is a chunk of job {record.job}, which "
                                        "has not ended: forget the job once it has")  # fmt: skip
            return None

        # the record goes first, checked and deleted as one step (a retry cannot revive it in
        # between); what it left beside it after (a crash there leaves files that retention's
        # sweep of folders without a record removes)
        record = self.records.delete_if(task_id, only_final)
        chunks = self.records.chunks_of(task_id) if record.chunks else []
        for chunk in chunks:  # a job's chunks go with it (they have all ended: it has)
            self.records.delete(chunk.id)
        if self.forget_files is not None:
            for gone in (record, *chunks):
                self.forget_files(gone)
        log.info("task forgotten", extra={"task_id": task_id})
        return record
