"""WorkerPool: runs every worker on its own thread, restarts any that dies, and drains on stop."""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pi_render.backoff import Backoff
from pi_render.clock import SYSTEM
from pi_render.processor.context import StopReason
from pi_render.workers.base import LoopWorker
from pi_render.workers.running import RunningTasks

log = logging.getLogger(__name__)
RESTART_BACKOFF = Backoff(0.1, 60.0)  # a worker that keeps dying restarts ever more slowly


@dataclass
class WorkerSlot:
    """One worker and the thread currently running it; `restarts` counts its deaths."""

    label: str
    make: Callable[[], LoopWorker]
    worker: LoopWorker | None = None
    thread: threading.Thread | None = None
    restarts: int = 0
    last_death: str | None = None

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class WorkerPool:
    """Starts the slots' threads; a supervisor thread, woken by each death, starts a new one."""

    def __init__(self, running: RunningTasks) -> None:
        self.running = running
        self.slots: list[WorkerSlot] = []
        self._cond = threading.Condition()
        self._dead: list[WorkerSlot] = []
        self._stopping = False
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    def add(self, label: str, make: Callable[[], LoopWorker]) -> None:
        self.slots.append(WorkerSlot(label=label, make=make))

    def start(self) -> None:
        for slot in self.slots:
            self._launch(slot)
        self._supervisor.start()

    def _launch(self, slot: WorkerSlot) -> None:
        slot.worker = slot.make()
        slot.thread = threading.Thread(
            target=self._body, args=(slot, slot.worker), name=slot.worker.name, daemon=True
        )
        slot.thread.start()

    def _body(self, slot: WorkerSlot, worker: LoopWorker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: B036  any death is reported, then the thread ends
            log.exception("worker thread died", extra={"worker": worker.name})
            with self._cond:
                slot.last_death = f"{type(exc).__name__}: {exc}"
                self._dead.append(slot)
                self._cond.notify_all()

    def _supervise(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dead or self._stopping)
                if self._stopping:
                    return
                dead, self._dead = self._dead, []
            for slot in dead:
                if slot.thread is not None:
                    slot.thread.join()
                slot.restarts += 1
                log.warning(
                    "restarting worker", extra={"worker": slot.label, "restarts": slot.restarts}
                )
                # a worker that keeps dying is restarted ever more slowly (at most once a minute)
                if self._stop_wait(RESTART_BACKOFF.delay(slot.restarts)):
                    return
                try:
                    self._launch(slot)
                except Exception as exc:  # its factory failed: count it as another death
                    log.exception("could not restart worker", extra={"worker": slot.label})
                    with self._cond:
                        slot.last_death = f"{type(exc).__name__}: {exc}"
                        self._dead.append(slot)

    def _stop_wait(self, seconds: float) -> bool:
        """Wait, unless stopping; True when stopping."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping, seconds)

    def restart(self, label: str, timeout_s: float = 60.0) -> bool:
        """Stop the workers of `label` and start new ones from their factories (a reload);
        False (and nothing new started) when an old one would not stop in time."""
        for slot in self.slots:
            if slot.label != label or slot.worker is None:
                continue
            slot.worker.stop()
            if slot.thread is not None:
                slot.thread.join(timeout_s)
                if slot.thread.is_alive():
                    log.error("worker did not stop for a reload", extra={"worker": slot.label})
                    return False
            self._launch(slot)
        return True

    def stop(self, grace_s: float, force_s: float = 30.0) -> None:
        """Stop taking tasks, let running ones finish within `grace_s`, then ask them to stop
        so they resume on the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.stop()
        self._join_all(grace_s)
        interrupted = self.running.stop_all(StopReason.SHUTDOWN)
        if interrupted:
            log.info("asked %d running task(s) to stop for shutdown", interrupted)
        self._join_all(force_s)

    def _join_all(self, timeout_s: float) -> None:
        deadline = SYSTEM.monotonic() + timeout_s
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - SYSTEM.monotonic()))

    def status(self) -> dict[str, dict[str, Any]]:
        """Per label: configured and live workers, restarts, and the last death seen."""
        labels: dict[str, dict[str, Any]] = {}
        for slot in self.slots:
            entry = labels.setdefault(
                slot.label, {"configured": 0, "alive": 0, "restarts": 0, "last_death": None}
            )
            entry["configured"] += 1
            entry["alive"] += int(slot.alive)
            entry["restarts"] += slot.restarts
            entry["last_death"] = slot.last_death or entry["last_death"]
        return labels
