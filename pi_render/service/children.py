"""Chaining: a child waits for its parent, gets its result when it completes, and is cancelled
with the reason when it fails or is cancelled."""

import logging

from pi_render.clock import Clock
from pi_render.errors import PiRenderError
from pi_render.manifest.contract import RecordStore
from pi_render.queue.router import Router
from pi_render.task import lifecycle
from pi_render.task.record import TaskRecord, TaskStatus

log = logging.getLogger(__name__)


class Children:
    def __init__(self, records: RecordStore, router: Router, clock: Clock) -> None:
        self.records, self.router, self.clock = records, router, clock

    def release(self, child: TaskRecord) -> bool:
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
                    if self.release(child):
                        self.router.put(self.records.latest(child.id))
        except PiRenderError:  # never break the write that told us; recovery retries at start
            log.exception("could not release the children", extra={"task_id": record.id})
