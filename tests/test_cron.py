"""Cron on a fake clock (DST in two zones, restarts, catch-up), retention, and against a real
daemon: a seconds-level job firing and a .blend dropped into the watch folder being rendered."""

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import DaemonProcess, wait_until

from pi_render.clock import FakeClock
from pi_render.config import load_settings
from pi_render.cron.schedule import CronJob, next_fire
from pi_render.cron.store import CronStore
from pi_render.manifest.records import TaskRecordManifest
from pi_render.queue.router import Router
from pi_render.service import TaskService
from pi_render.task import lifecycle
from pi_render.workers.cron_worker import CronWorker
from pi_render.workers.periodic import prune_old_records
from pi_render.workers.running import RunningTasks


def fires_per_local_day(schedule: str, zone: str, day: datetime) -> dict[str, int]:
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz) - timedelta(days=1)
    end = start + timedelta(days=3)
    counts: dict[str, int] = {}
    at = start.astimezone(timezone.utc)
    while (at := next_fire(schedule, zone, at)) < end:
        local = at.astimezone(tz).date().isoformat()
        counts[local] = counts.get(local, 0) + 1
    return counts


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("America/New_York", datetime(2026, 3, 8), datetime(2026, 11, 1)),
        ("Europe/Berlin", datetime(2026, 3, 29), datetime(2026, 10, 25)),
    ],
)
@pytest.mark.parametrize("schedule", ["30 1 * * *", "30 2 * * *", "0 3 * * *"])
def test_daily_jobs_fire_exactly_once_on_dst_days(
    zone: str, spring: datetime, autumn: datetime, schedule: str
) -> None:
    for day in (spring, autumn):
        counts = fires_per_local_day(schedule, zone, day)
        assert counts == {d: 1 for d in counts} and len(counts) == 3, (zone, day, counts)


def test_six_fields_are_seconds_first() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert next_fire("*/15 * * * * *", "UTC", start) == start + timedelta(seconds=15)
    with pytest.raises(ValueError, match="5 or 6 fields"):
        CronJob(name="x", schedule="every day", task="noop")
    with pytest.raises(ValueError, match="time zone"):
        CronJob(name="x", schedule="* * * * *", task="noop", timezone="Mars/Olympus")


class Rig:
    def __init__(self, folder: Path, clock: FakeClock) -> None:
        settings = load_settings(env={"PI_RENDER_DATA_DIR": str(folder), "HOME": str(folder)})
        self.settings = settings
        self.clock = clock
        self.records = TaskRecordManifest(settings.paths.records)
        self.router = Router(settings)
        self.service = TaskService(self.records, self.router, RunningTasks(), clock,
                                   settings.paths, settings.outputs)  # fmt: skip
        self.store = CronStore(folder / "cron.sqlite")

    def worker(self, **job: object) -> CronWorker:
        spec = CronJob.model_validate({"name": "nightly", "schedule": "30 1 * * *",
                                       "task": "noop", **job})  # fmt: skip
        return CronWorker([spec], [], self.store, self.service, self.records, self.clock)

    def fired(self) -> int:
        return len(self.records.query(type_name="noop", limit=1000))


def test_restart_neither_repeats_nor_loses_a_job(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc))
    rig = Rig(tmp_path, clock)
    worker = rig.worker()
    clock.advance(3600 * 1.5)  # 01:30
    assert worker.tick(clock.now()) == 1
    assert rig.worker().tick(clock.now()) == 0  # a restart at the same moment fires nothing
    assert rig.fired() == 1
    clock.advance(86400)
    assert rig.worker().tick(clock.now()) == 1 and rig.fired() == 2
    record = rig.records.query(type_name="noop", limit=1)[0]
    assert record.origin == "cron:nightly@2026-01-02T01:30:00+00:00"


def test_a_fire_interrupted_by_a_crash_is_completed_once(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc))
    rig = Rig(tmp_path, clock)
    worker = rig.worker()
    state = worker.states["nightly"]
    state.firing = state.next_fire  # as if killed between marking the fire and submitting
    rig.store.put(state)
    clock.advance(3600)
    rig.worker()  # the restart finishes that fire…
    rig.worker()  # …and a second restart does not repeat it
    assert rig.fired() == 1


@pytest.mark.parametrize(("catch_up", "expected"), [("skip", 0), ("once", 1)])
def test_catch_up_after_downtime(tmp_path: Path, catch_up: str, expected: int) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc))
    rig = Rig(tmp_path, clock)
    rig.worker(catch_up=catch_up)
    clock.advance(3 * 86400)  # the daemon was down for three nightly runs
    worker = rig.worker(catch_up=catch_up)
    assert rig.fired() == expected
    next_run = worker.states["nightly"].next_fire
    assert next_run is not None and next_run > clock.now()


def test_retention_prunes_old_records_and_their_logs_but_not_outputs(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    rig = Rig(tmp_path, clock)
    old = rig.service.submit("noop", {}).record
    rig.records.change(old.id, lambda r: lifecycle.start(r, clock.now(), "w"))
    rig.records.change(old.id, lambda r: lifecycle.complete(r, clock.now(), {"output_dir": str(
        tmp_path / "out")}))  # fmt: skip
    (tmp_path / "out").mkdir()
    log = rig.settings.paths.logs / f"{old.id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("blender said things")
    clock.advance(40 * 86400)
    young = rig.service.submit("noop", {}).record
    forgotten: list[str] = []
    assert prune_old_records(rig.records, rig.settings, clock.now(), [forgotten.append]) == 1
    assert forgotten == [old.id]
    assert [r.id for r in rig.records.query()] == [young.id]
    assert not log.exists() and (tmp_path / "out").exists()


def test_a_seconds_level_job_fires_in_a_real_daemon(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    config = ('[[cron]]\nname = "tick"\nschedule = "* * * * * *"\ntask = "noop"\n'
              'args = {payload = "tock"}\n')  # fmt: skip
    daemon = make_daemon(config).start()

    def fired() -> list[object]:
        return [r for r in daemon.client.list(type_name="noop") if r.status == "completed"]

    wait_until(lambda: len(fired()) >= 2, timeout=30, what="two cron fires")
    out = subprocess.run(
        [sys.executable, "-m", "pi_render", "cron", "--json", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    jobs = {job["name"]: job for job in json.loads(out.stdout)}
    assert jobs["tick"]["task"] == "noop" and jobs["tick"]["last_fire"] is not None
    assert {"maintenance", "retention"} <= set(jobs)


def test_unknown_cron_task_stops_the_start(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon('[[cron]]\nname = "bad"\nschedule = "* * * * *"\ntask = "nope"\n')
    proc = daemon.spawn()
    assert proc.wait(60) == 2
    assert "cron job 'bad'" in daemon.log() and "unknown task type 'nope'" in daemon.log()
