"""CronWorker: submits each job's task when due, and runs the built-in periodic jobs.

Last and next fire times are persisted, and a fire is marked before its task is submitted (the
task carries the fire as its `origin`), so a restart neither repeats a job nor loses it. After
downtime, `catch_up` says whether a missed job runs once or is skipped.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pi_render.clock import Clock
from pi_render.cron.schedule import CronJob, next_fire
from pi_render.cron.store import CronState, CronStore
from pi_render.errors import DuplicateOrigin
from pi_render.manifest.contract import RecordStore
from pi_render.service import TaskService
from pi_render.task.record import Priority
from pi_render.workers.base import LoopWorker

log = logging.getLogger(__name__)

MISSED_AFTER = timedelta(seconds=60)  # a fire this late at start is still run, not "missed"


@dataclass
class BuiltinJob:
    """A periodic job of the daemon's own (maintenance, retention, the watch folder)."""

    name: str
    schedule: str
    run: Callable[[], object]


class CronWorker(LoopWorker):
    """`tick(now)` does the work (tests call it on a fake clock); `run_once` also waits."""

    def __init__(
        self,
        jobs: list[CronJob],
        builtins: list[BuiltinJob],
        store: CronStore,
        service: TaskService,
        records: RecordStore,
        clock: Clock,
        claim: Callable[[str, str], bool] = lambda name, slot: True,
    ) -> None:
        super().__init__("cron")
        self.claim = claim  # farm mode: a built-in job's slot runs on one host only
        self.jobs = {job.name: job for job in jobs}
        self.builtins = {job.name: job for job in builtins}
        self.store, self.service, self.records, self.clock = store, service, records, clock
        self.states: dict[str, CronState] = {}
        self._start(clock.now())

    def _start(self, now: datetime) -> None:
        """Load persisted state; finish a fire a crash interrupted; apply catch_up."""
        schedules = {**{n: (j.schedule, j.timezone) for n, j in self.jobs.items()},
                     **{n: (b.schedule, "UTC") for n, b in self.builtins.items()}}  # fmt: skip
        for name, (schedule, zone) in schedules.items():
            state = self.store.get(name)
            if state is None or state.schedule != schedule:
                state = CronState(name=name, schedule=schedule,
                                  last_fire=state.last_fire if state else None,
                                  next_fire=next_fire(schedule, zone, now))  # fmt: skip
            if state.firing is not None and name in self.jobs:
                self._submit(self.jobs[name], state.firing)  # no-op if it did get submitted
                state.last_fire, state.firing = state.firing, None
            if state.next_fire is not None and state.next_fire < now - MISSED_AFTER:
                missed = state.next_fire
                if name in self.jobs and self.jobs[name].catch_up == "once":
                    state.firing = missed
                    self.store.put(state)
                    self._submit(self.jobs[name], missed)
                    state.last_fire, state.firing = missed, None
                    log.info("cron job caught up once", extra={"job": name, "missed": missed})
                elif name in self.jobs:
                    log.info("cron job skipped missed runs", extra={"job": name, "missed": missed})
                state.next_fire = next_fire(schedule, zone, now)
            self.states[name] = state
            self.store.put(state)

    def tick(self, now: datetime) -> int:
        """Fire every job that is due at `now`; returns how many fired."""
        fired = 0
        for name, state in self.states.items():
            if state.next_fire is None or state.next_fire > now:
                continue
            slot = state.next_fire
            if name in self.jobs:
                job = self.jobs[name]
                state.firing = slot
                self.store.put(state)
                self._submit(job, slot)
                zone = job.timezone
            else:
                if self.claim(name, slot.isoformat()):
                    self._run_builtin(self.builtins[name])
                zone = "UTC"
            state.last_fire, state.firing = slot, None
            state.next_fire = next_fire(state.schedule, zone, max(slot, now))
            self.store.put(state)
            fired += 1
        return fired

    def _submit(self, job: CronJob, slot: datetime) -> None:
        origin = f"cron:{job.name}@{slot.isoformat()}"
        if self.records.find_origin(origin) is not None:
            return
        try:
            self.service.submit(job.task, job.args, Priority(job.priority), origin=origin)
            log.info("cron job fired", extra={"job": job.name, "slot": slot.isoformat()})
        except DuplicateOrigin:  # farm mode: another host fired this slot first
            log.debug("cron slot fired by another host", extra={"job": job.name})
        except Exception as exc:  # a bad job must not stop the cron worker (nor its restarts)
            log.error("cron job could not submit its task: %s", exc, extra={"job": job.name})

    def _run_builtin(self, job: BuiltinJob) -> None:
        try:
            job.run()
        except Exception:  # a periodic job's failure must not stop the others
            log.exception("periodic job failed", extra={"job": job.name})

    def run_once(self) -> bool:
        fired = self.tick(self.clock.now())
        upcoming = [s.next_fire for s in self.states.values() if s.next_fire is not None]
        if upcoming:
            wait = (min(upcoming) - self.clock.now()).total_seconds()
            self.stop_event.wait(min(3600.0, max(0.0, wait)))
        else:
            self.stop_event.wait(3600.0)
        return fired > 0

    def listing(self) -> list[dict[str, object]]:
        """What `pi-render cron` shows."""
        rows: list[dict[str, object]] = []
        for name, state in self.states.items():
            job = self.jobs.get(name)
            rows.append({
                "name": name, "schedule": state.schedule,
                "task": job.task if job else "(built-in)",
                "timezone": job.timezone if job else "UTC",
                "catch_up": job.catch_up if job else "skip",
                "last_fire": state.last_fire.isoformat() if state.last_fire else None,
                "next_fire": state.next_fire.isoformat() if state.next_fire else None,
            })  # fmt: skip
        return rows
