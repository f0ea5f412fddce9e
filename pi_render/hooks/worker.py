"""HookWorker: delivers what the outbox owes (a command or an HTTP POST), retrying with backoff;
wakes when something new is owed."""

import logging
import subprocess
from datetime import timedelta

import httpx

from pi_render.backoff import Backoff
from pi_render.clock import Clock
from pi_render.errors import TaskNotFound
from pi_render.hooks.outbox import Delivery, HookOutbox
from pi_render.manifest.contract import RecordStore
from pi_render.task.record import TaskRecord, TaskStatus
from pi_render.workers.base import LoopWorker

log = logging.getLogger(__name__)


class HookWorker(LoopWorker):
    """Delivers what the outbox owes, retrying with backoff; wakes on new entries."""

    def __init__(self, outbox: HookOutbox, records: RecordStore, clock: Clock) -> None:
        super().__init__("hooks")
        self.outbox, self.records, self.clock = outbox, records, clock

    def wake(self) -> None:
        with self.outbox.changed:
            self.outbox.changed.notify_all()

    def run_once(self) -> bool:
        delivered = self.deliver_due()
        owed = [e.next_attempt_at for e in self.outbox.owed()]
        wait = 3600.0
        if owed:
            now = self.clock.now()
            wait = max(0.5, min((t - now).total_seconds() if t else 0.0 for t in owed))
        if not self.stop_event.is_set():
            with self.outbox.changed:
                self.outbox.changed.wait(min(3600.0, wait))
        return delivered > 0

    def deliver_due(self) -> int:
        now, delivered = self.clock.now(), 0
        for entry in self.outbox.owed():
            if entry.next_attempt_at is not None and entry.next_attempt_at > now:
                continue
            try:
                record = self.records.get(entry.task_id)
            except TaskNotFound:
                self.outbox.delete(entry)
                continue
            if not record.status.is_final:  # committed after the entry (or running again): later
                entry.next_attempt_at = now + timedelta(seconds=5)
                self.outbox.put(entry)
                continue
            if record.status is not TaskStatus(entry.status):
                self.outbox.delete(entry)  # it ended otherwise (a crash in between, then a rerun)
                continue
            delivered += self._deliver(entry, record)
        return delivered

    def _deliver(self, entry: Delivery, record: TaskRecord) -> int:
        hook = self.outbox.hook(entry.hook)
        if hook is None:  # removed from the config by a reload
            log.warning("dropping a delivery: its hook is gone", extra={"task_id": entry.task_id})
            self.outbox.delete(entry)
            return 0
        body = record.model_dump_json()
        entry.attempts += 1
        try:
            if hook.command is not None:
                done = subprocess.run(hook.command, input=body, text=True, capture_output=True,
                                      timeout=hook.timeout_s)  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
            else:
                assert hook.url is not None
                response = httpx.post(hook.url, content=body, timeout=hook.timeout_s,
                                      headers={"content-type": "application/json"})  # fmt: skip
                response.raise_for_status()
        except Exception as exc:  # any failure is retried later
            delay = Backoff(hook.retry_s, 3600.0).delay(entry.attempts)
            entry.last_error = f"{type(exc).__name__}: {exc}"
            entry.next_attempt_at = self.clock.now() + timedelta(seconds=delay)
            self.outbox.put(entry)
            log.warning("hook delivery failed, retrying in %.1fs: %s", delay, entry.last_error,
                        extra={"task_id": entry.task_id})  # fmt: skip
            return 0
        entry.delivered_at, entry.last_error = self.clock.now(), None
        self.outbox.put(entry)
        log.info("hook delivered", extra={"task_id": entry.task_id, "hook": entry.hook})
        return 1
