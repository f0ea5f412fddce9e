"""FailedTaskWorker: files failed tasks in the manifest and puts due ones back on their queue.

Crash-safe ordering: the manifest entry is durable before the failed-queue item is acked; a due
entry leaves the manifest only after its task is back on its queue (and is not put twice).
"""

import logging
from collections.abc import Callable

from pi_render.clock import Clock
from pi_render.errors import PiRenderError, TaskNotFound
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.failed import FailedTask, FailedTaskManifest
from pi_render.queue.base import TaskQueue
from pi_render.queue.router import Router
from pi_render.task import lifecycle
from pi_render.task.record import TaskStatus
from pi_render.workers.base import STORAGE_ERRORS, LoopWorker

log = logging.getLogger(__name__)

Checkpoint = Callable[[str], None]


class FailedTaskWorker(LoopWorker):
    """Consumes the failed queue; wakes for each failure and for the next due retry."""

    def __init__(
        self,
        failed_queue: TaskQueue,
        manifest: FailedTaskManifest,
        records: RecordStore,
        router: Router,
        clock: Clock,
        idle_wait_s: float = 60.0,
        checkpoint: Checkpoint = lambda step: None,
    ) -> None:
        super().__init__("failures")
        self.failed_queue, self.manifest, self.records = failed_queue, manifest, records
        self.router, self.clock, self.idle_wait_s = router, clock, idle_wait_s
        self.checkpoint = checkpoint  # tests crash here to prove each step is safe

    def wake(self) -> None:
        self.failed_queue.wake_all()

    def run_once(self) -> bool:
        item = self.failed_queue.get(timeout=self._until_next_due())
        worked = False
        if item is not None:
            try:
                self._file(item.task_id)
            except STORAGE_ERRORS:  # a full disk: hand it back for the next try (run backs off)
                self.failed_queue.nack(item)
                raise
            self.checkpoint("filed")
            self.failed_queue.ack(item)
            worked = True
        return self.requeue_due() > 0 or worked

    def _until_next_due(self) -> float:
        waiting = [e.next_attempt_at for e in self.manifest.waiting() if e.next_attempt_at]
        if not waiting:
            return self.idle_wait_s
        seconds = (min(waiting) - self.clock.now()).total_seconds()
        return min(self.idle_wait_s, max(0.0, seconds))

    def _file(self, task_id: str) -> None:
        try:
            record = self.records.latest(task_id)
        except TaskNotFound:
            return
        if record.status in (TaskStatus.RETRYING, TaskStatus.FAILED):
            self.manifest.put(FailedTask.of(record))

    def requeue_due(self) -> int:
        """Put every due task back on its queue; returns how many."""
        now, count = self.clock.now(), 0
        for entry in self.manifest.waiting():
            if entry.next_attempt_at is None or entry.next_attempt_at > now:
                continue
            try:
                record = self.records.change(entry.task_id, lifecycle.due) or self.records.latest(
                    entry.task_id
                )
            except TaskNotFound:
                self.manifest.delete(entry.task_id)
                continue
            self.checkpoint("due")
            if record.status is TaskStatus.PENDING and self.router.locate(record.id) is None:
                try:
                    self.router.put(record)
                except PiRenderError as exc:  # its label lost its workers: it waits (recovery)
                    log.error("cannot requeue a due task: %s", exc, extra={"task_id": record.id})
                    continue
                count += 1
                log.info(
                    "retrying task", extra={"task_id": record.id, "attempt": record.attempts + 1}
                )
            self.checkpoint("requeued")
            if record.status is TaskStatus.FAILED:  # failed again meanwhile: list it as dead
                self.manifest.put(FailedTask.of(record))
            elif record.status is not TaskStatus.RETRYING:
                self.manifest.delete(entry.task_id)
        return count
