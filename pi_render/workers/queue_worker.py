"""QueueWorker: take a task, run its processor, write the outcome, and only then ack."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pi_render.clock import Clock
from pi_render.errors import StaleAttempt, TaskNotFound, TaskTimedOut
from pi_render.heap import TRIMMER
from pi_render.manifest.contract import RecordStore
from pi_render.processor.base import ProcessorEnv, is_pure, processor_for
from pi_render.processor.context import StopReason, TaskContext, TaskStopped
from pi_render.queue.base import QueueItem, TaskQueue
from pi_render.queue.router import needed_tags
from pi_render.retry import RetryPolicies
from pi_render.task import lifecycle
from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus
from pi_render.workers.base import STORAGE_BACKOFF, STORAGE_ERRORS, LoopWorker
from pi_render.workers.running import RunningTasks

if TYPE_CHECKING:
    from pi_render.farm.policy import FailurePolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The failure policy's answer (farm/policy.py); this default one changes nothing."""

    give_up: str | None = None
    avoid: list[str] = field(default_factory=list)


PROGRESS_MIN_INTERVAL_S = 0.5  # progress is durable; don't fsync more often than this per task
T = TypeVar("T")


class QueueWorker(LoopWorker):
    """Consumes one label's queue; a crash anywhere before the ack means redelivery."""

    def __init__(
        self,
        name: str,
        queue: TaskQueue,
        records: RecordStore,
        running: RunningTasks,
        clock: Clock,
        idle_wait_s: float = 60.0,
        env: ProcessorEnv | None = None,
        retry: RetryPolicies | None = None,
        checkpoint: Callable[[str], None] = lambda step: None,
        timeouts: Callable[[], dict[str, float]] | None = None,
        heartbeat_s: float = 5.0,
        policy: "FailurePolicy | None" = None,
        gpu_slot: int | None = None,
    ) -> None:
        super().__init__(name)
        self.gpu_slot = gpu_slot  # gpu_per_worker: the GPU its renders use
        self.policy = policy  # farm mode: where a failed chunk may run again
        self.env = env
        self.timeouts = timeouts or dict  # read per task: a reload swaps the settings whole
        self.heartbeat_s = heartbeat_s
        self._watch = _Watch(heartbeat_s, clock)
        self.retry = retry or RetryPolicies({})
        self.checkpoint = checkpoint  # tests crash here to show each step of a failure is safe
        self.queue = queue
        self.records = records
        self.running = running
        self.clock = clock
        self.idle_wait_s = idle_wait_s  # a safety net only: `put` wakes us
        self.busy = threading.Event()
        self._last_progress: dict[str, float] = {}

    def wake(self) -> None:
        self.queue.wake_all()

    def run_once(self) -> bool:
        item = self.queue.get(timeout=0)
        if item is None:  # idle now: give back what the last burst freed, then wait
            TRIMMER.idle()
            if self.stop_event.is_set():
                return False
            item = self.queue.get(timeout=self.idle_wait_s)
        if item is None:
            return False
        TRIMMER.worked()
        if self.stop_event.is_set():
            self.queue.nack(item)  # stopping: leave it for the next start, in its place
            return False
        self.busy.set()
        try:
            self._deliver(item)
        finally:
            self.busy.clear()
        return True

    def _deliver(self, item: QueueItem) -> None:
        ctx: TaskContext = TaskContext(
            item.task_id,
            0,
            lambda *report: self._on_progress(ctx, *report),
            clock=self.clock,
            on_hold=lambda reason: self._on_hold(ctx, reason),
        )
        self.running.add(ctx)  # before the record says running, so a cancel always finds it
        finished = started = False
        try:
            try:
                record = self.records.change(item.task_id, lambda r: lifecycle.start(
                    r, self.clock.now(), self.name, take_over=item.redelivered),
                    lazy=lambda r: is_pure(r.type))  # fmt: skip
            except TaskNotFound:
                log.warning(
                    "queued task has no record; dropping it", extra={"task_id": item.task_id}
                )
                record = None
            except STORAGE_ERRORS:  # not started (the write was undone): hand it back
                # it may be on disk as running after all (the disk's refusal can be uncertain)
                self._durably(lambda: self.records.change(
                    item.task_id, lambda r: lifecycle.requeue(r) if r.worker == self.name
                    else None))  # fmt: skip
                self._durably(lambda: self.queue.nack(item))
                finished = True
                raise  # LoopWorker.run logs it and backs off before the next try
            started = record is not None
            if record is None:  # final already (done before a crash, or cancelled): never rerun
                self._keep_retry(item.task_id)
                self._durably(lambda: self.queue.ack(item))
                finished = True
                return
            ctx.attempt = record.attempts
            ctx.job = record.job
            ctx.gpu_slot = self.gpu_slot
            ctx.parent_result = record.parent_result
            ctx.record_json = record.model_dump_json()
            finished = self._run(record, ctx, item)
        finally:
            self.running.discard(item.task_id)
            self._last_progress.pop(item.task_id, None)
            if not finished:  # the thread is dying mid-task: hand the task back
                if started:
                    self.records.change(
                        item.task_id, lifecycle.fenced(ctx.attempt, lifecycle.requeue)
                    )
                self.queue.nack(item)

    def _keep_retry(self, task_id: str) -> None:
        """A retrying task delivered before its time (its old row, handed back by a crash before
        its ack) waits for that time on a delayed put: one is made unless its queue has it."""
        current = self.records.find(task_id)
        if current is None or current.status is not TaskStatus.RETRYING:
            return
        if not self.queue.contains(task_id):
            self._durably(lambda: self.queue.put(task_id, current.priority,
                                                 not_before=current.next_attempt_at))  # fmt: skip

    def _durably(self, write: Callable[[], T]) -> T:
        """Do `write` (an outcome, an ack) until the data disk takes it: a full disk holds the
        worker, never loses what its task did. Gives up only when the daemon stops (the record
        then still says running, and the next start runs the task again)."""
        tries = STORAGE_BACKOFF.counter()
        while True:
            try:
                return write()
            except STORAGE_ERRORS as exc:
                wait = tries.failed()
                log.error("the data disk refuses a write; trying again in %.1fs: %s", wait, exc,
                          extra={"worker": self.name})  # fmt: skip
                if self.stop_event.wait(wait):
                    raise

    def _run(self, record: TaskRecord, ctx: TaskContext, item: QueueItem) -> bool:
        """Run it and write its outcome; a write refused as stale (farm mode: the lease ran out
        and another host took the task over) ends this attempt with nothing more written."""
        try:
            return self._attempt(record, ctx, item)
        except StaleAttempt as exc:
            log.warning("attempt taken over by another host; this one stops: %s", exc,
                        extra={"task_id": record.id, "attempt": record.attempts})  # fmt: skip
            return True  # no ack: the delivery is no longer ours (an ack would be refused)

    def _change(self, record: TaskRecord,
                move: Callable[[TaskRecord], TaskRecord | None]) -> None:  # fmt: skip
        """A durable write of this attempt's, fenced: refused (StaleAttempt) once another
        attempt holds the task."""
        self._durably(
            lambda: self.records.change(record.id, lifecycle.fenced(record.attempts, move))
        )

    def _attempt(self, record: TaskRecord, ctx: TaskContext, item: QueueItem) -> bool:
        extra = {"task_id": record.id, "type": record.type, "attempt": record.attempts,
                 "worker": self.name}  # fmt: skip
        # a pure task's start is not worth a line of its own: its outcome's line follows at once
        log.log(logging.DEBUG if is_pure(record.type) else logging.INFO, "task started",
                extra=extra)  # fmt: skip
        started = self.clock.monotonic()
        limit = record.timeout_s or self.timeouts().get(record.type)
        watch = self._watch.watching(
            lambda: self._beat(record, item, ctx),
            limit,
            lambda: ctx.request_stop(StopReason.TIMEOUT),
            ctx.paused_s,
        )
        try:
            with watch:
                result = processor_for(record.type, self.env).run(record.args, ctx)
        except TaskStopped as stop:
            if stop.reason is StopReason.TIMEOUT:
                self._failed(record, TaskTimedOut(f"ran past its {limit:g}s limit"), extra)
                self._durably(lambda: self.queue.ack(item))
                return True
            if stop.reason is StopReason.LEASE_LOST:
                raise StaleAttempt(f"the lease of task {record.id} ran out") from None
            if stop.reason is StopReason.SHUTDOWN:
                self.records.change(record.id, lifecycle.fenced(record.attempts, lifecycle.requeue))
                self.queue.nack(item)
                log.info("task interrupted by shutdown; it resumes on the next start", extra=extra)
                return True
            self._change(
                record, lambda r: lifecycle.cancel(r, self.clock.now(), "cancelled while running")
            )
            log.info("task cancelled while running", extra=extra)
        except StaleAttempt:
            raise
        except Exception as exc:  # the worker's boundary: a processor's error fails its task only
            self._failed(record, exc, extra)
        else:
            self._change(record, lambda r: lifecycle.complete(r, self.clock.now(), result))
            seconds = self.clock.monotonic() - started
            log.info("task completed in %.3fs", seconds, extra=extra)
        self._durably(lambda: self.queue.ack(item))  # only now: the outcome is durable
        return True

    def _failed(self, record: TaskRecord, exc: Exception, extra: dict[str, Any]) -> None:
        """Retry later (backoff: a delayed put on its own queue) or dead; before the ack."""
        error = lifecycle.error_info(exc)
        if self.env is not None and self.env.host is not None:
            error = error.model_copy(update={"host": self.env.host})
        now = self.clock.now()
        used = record.attempts - record.retried_at_attempt  # of this budget (a retry renews it)
        at = self.retry.next_attempt(record.type, used, exc, now)
        verdict = self._judge(record, error)
        if verdict.give_up is not None:
            error = error.model_copy(update={"message": f"{error.message} ({verdict.give_up})"})
            at = None
        if at is None:
            self._change(record, lambda r: lifecycle.fail(r, now, error))
            log.error("task failed for good: %s", error.message, extra=extra)
        else:
            self._change(record, lambda r: lifecycle.retry_later(r, error, at))
            self.checkpoint("retrying")
            # a retry is a delayed put: the queue holds it until `at` (a crash before this line
            # leaves a retrying record without one, which recovery queues again at start)
            self._durably(lambda: self._put_again(record, at, verdict.avoid))
            self.checkpoint("queued")
            log.warning("task failed, retrying at %s: %s", at.isoformat(), error.message,
                        extra=extra)  # fmt: skip

    def _judge(self, record: TaskRecord, error: ErrorInfo) -> Verdict:
        """Farm mode, a chunk: the failure policy decides where (and whether) it runs again."""
        if self.policy is None or record.job is None or error.host is None:
            return Verdict()
        return self.policy.judge(record, error)

    def _put_again(self, record: TaskRecord, at: datetime, avoid: list[str]) -> None:
        self.queue.put(record.id, record.priority, not_before=at, needs=needed_tags(record),
                       avoid=avoid)  # fmt: skip

    def _beat(self, record: TaskRecord, item: QueueItem, ctx: TaskContext) -> None:
        """Renew the lease first (it must not run out while the record is written); a lease
        that is gone, or a record another attempt holds, stops this one (its Blender too)."""
        try:
            if not self.queue.extend(item):
                raise StaleAttempt(f"the lease of task {record.id} ran out")
            self.records.change(
                record.id,
                lifecycle.fenced(
                    record.attempts, lambda r: lifecycle.heartbeat(r, self.clock.now())
                ),
            )
        except StaleAttempt:
            ctx.request_stop(StopReason.LEASE_LOST)

    def _on_hold(self, ctx: TaskContext, reason: str | None) -> None:
        """A processor paused itself (or let go): the record says why, at once (not throttled
        as progress is); a refused write is logged, and the hold goes on."""
        if reason is not None:
            log.warning("task paused: %s", reason, extra={"task_id": ctx.task_id})
        else:
            log.info("task resumed: %s", "its output disk has room again",
                     extra={"task_id": ctx.task_id})  # fmt: skip

        def move(record: TaskRecord) -> TaskRecord | None:  # the state now, not at the call
            return lifecycle.set_paused(record, ctx.paused, ctx.held)

        try:
            self.records.change(ctx.task_id, lifecycle.fenced(ctx.attempt, move))
        except STORAGE_ERRORS as exc:
            log.warning("pause not recorded: %s", exc, extra={"task_id": ctx.task_id})
        except StaleAttempt:
            ctx.request_stop(StopReason.LEASE_LOST)

    def _on_progress(self, ctx: TaskContext, fraction: float, message: str | None,
                     detail: dict[str, Any] | None) -> None:  # fmt: skip
        task_id = ctx.task_id
        now = self.clock.monotonic()
        last = self._last_progress.get(task_id, float("-inf"))
        if now - last < PROGRESS_MIN_INTERVAL_S:
            return  # completion records progress 1.0 anyway
        self._last_progress[task_id] = now
        try:
            self.records.change(
                task_id,
                lifecycle.fenced(
                    ctx.attempt, lambda r: lifecycle.progress(r, fraction, message, detail)
                ),
            )
        except STORAGE_ERRORS as exc:  # progress is a courtesy: a full disk must not fail work
            log.warning("progress not recorded: %s", exc, extra={"task_id": task_id})
        except StaleAttempt:  # another host holds the task now: this attempt stops
            ctx.request_stop(StopReason.LEASE_LOST)


class _Watch:
    """A worker's watcher, one thread reused for every task it runs: while a task runs, a
    heartbeat every `every_s` and a stop once its limit has passed (paused time not counted).
    A thread started and joined per task cost more than a short task itself."""

    def __init__(self, every_s: float, clock: Clock) -> None:
        self.every_s, self.clock = every_s, clock
        self._cond = threading.Condition()
        self._task: tuple[Callable[[], None], float | None, Callable[[], None],
                          Callable[[], float]] | None = None  # fmt: skip
        self._generation = 0  # changes whenever a task starts or ends
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, beat: Callable[[], None], limit_s: float | None,
                 expire: Callable[[], None],
                 paused_s: Callable[[], float]) -> Iterator[None]:  # fmt: skip
        with self._cond:
            self._task = (beat, limit_s, expire, paused_s)
            self._generation += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._task = None
                self._generation += 1
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._task is not None)
                assert self._task is not None
                (beat, limit_s, expire, paused_s), generation = self._task, self._generation
            self._watch(generation, beat, limit_s, expire, paused_s)

    def _watch(self, generation: int, beat: Callable[[], None], limit_s: float | None,
               expire: Callable[[], None], paused_s: Callable[[], float]) -> None:  # fmt: skip
        deadline = None if limit_s is None else self.clock.monotonic() + limit_s
        while True:
            counted = self.clock.monotonic() - paused_s()  # paused time does not count
            wait = self.every_s if deadline is None else min(self.every_s, deadline - counted)
            with self._cond:
                ended = self.clock.wait_for(self._cond, lambda: self._generation != generation,
                                            max(0.0, wait))  # fmt: skip
                if ended:
                    return  # the task ended
            if deadline is not None and self.clock.monotonic() - paused_s() >= deadline:
                expire()
                deadline = None  # asked once; the processor stops when it can
                continue
            try:
                beat()
            except STORAGE_ERRORS as exc:  # the store is away: the task goes on, beats resume
                log.warning("heartbeat not recorded: %s", exc)
            except Exception:  # a missed beat shows as stale in health; never kill the task
                log.exception("heartbeat failed")
