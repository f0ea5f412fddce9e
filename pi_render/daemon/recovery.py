"""What a (re)started daemon does before its workers run, so that every task reaches an end."""

import logging
from typing import TYPE_CHECKING

from pi_render.manifest.contract import RecordStore
from pi_render.queue.router import Router
from pi_render.task import lifecycle
from pi_render.task.record import TaskStatus

if TYPE_CHECKING:
    from pi_render.service import TaskService

log = logging.getLogger(__name__)


def release_waiting(records: RecordStore, service: "TaskService") -> None:
    """Children whose parent ended while the daemon was down (or in a crash) go on now."""
    for record in records.with_status(TaskStatus.PENDING):
        if record.parent is not None and record.parent_result is None:
            service.on_record(records.latest(record.parent))


def recover(records: RecordStore, router: Router, farm: bool = False) -> None:
    """Running records resume as pending; pending records whose queue row never got written (or
    was lost in a power cut) are enqueued again, in order; retrying records whose delayed put
    never got written are put again, for their next attempt's time.

    In farm mode the records are every host's: a running one may be running elsewhere, so it
    is left to its lease (a dead host's lease runs out and its task is claimed again), and a
    row counts as there while a host holds it (`router.holds`). Jobs are never queued."""
    there = router.holds if farm else router.locate
    for record in records.with_status(TaskStatus.RETRYING):
        if there(record.id) is not None:
            continue
        if record.label not in router.queues:
            log.error("retrying task's label has no workers; it waits until one is configured",
                      extra={"task_id": record.id, "label": record.label})  # fmt: skip
            continue
        router.put(record, not_before=record.next_attempt_at)
        log.info("re-queued a retry missing from its queue", extra={"task_id": record.id})
    for record in records.unfinished():
        if record.chunks or (farm and record.status is TaskStatus.RUNNING):
            continue
        if record.status is TaskStatus.RUNNING:
            records.change(record.id, lifecycle.requeue)
            log.info("resuming task left running", extra={"task_id": record.id})
        if record.parent is not None and record.parent_result is None:
            continue  # a child waiting for its parent: TaskService.release_waiting decides
        if there(record.id) is None:
            if record.label in router.queues:
                router.put(record)
                log.info("re-enqueued task missing from its queue", extra={"task_id": record.id})
            else:
                log.error(
                    "pending task's label has no workers; it waits until one is configured",
                    extra={"task_id": record.id, "label": record.label},
                )
