"""The output disk cannot fill halfway through a job: a real render onto a small tmpfs pauses
(record, health) when the projection says the rest will not fit, with nothing half-written, and
finishes by itself once space is freed; a submit refuses a job that an earlier render of the
same file shows cannot fit."""

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DaemonProcess, run_in_background, small_disk, wait_until
from fastapi.testclient import TestClient
from PIL import Image

from pi_render.api.client import ApiError
from pi_render.api.events import EventLog
from pi_render.clock import FakeClock
from pi_render.processor import trial
from pi_render.processor.blender import BlenderEvent
from pi_render.processor.blender_run import BlenderProcess, PausedTooLong, RenderStalled
from pi_render.processor.context import TaskContext
from pi_render.processor.disk_space import (
    FrameSizes,
    OutputDiskFull,
    OutputDiskTooSmall,
    Space,
    SpaceGuard,
)
from pi_render.task.output_space import on_disk
from pi_render.web.app import create_web_app
from pi_render.web.guard import Sessions

PAGE = 4096


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (mounting needs root, as CI has)."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI runs as root: the tmpfs output disk must be mounted")
        pytest.skip("mounting a tmpfs needs root")
    with small_disk(tmp_path / "disk", "64k") as disk:
        yield disk


def leave_free(disk: Path, leave: int) -> Path:
    """A file that leaves `leave` bytes free on `disk`."""
    free = os.statvfs(disk).f_bavail * PAGE
    filler = disk / "filler"
    filler.write_bytes(b"\xff" * (free - leave))
    assert os.statvfs(disk).f_bavail * PAGE == leave
    return filler


def test_a_render_pauses_before_its_output_disk_fills_then_finishes_when_space_returns(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], tiny_disk: Path
) -> None:
    filler = leave_free(tiny_disk, 3 * PAGE)  # room for 3 of the 8 frames (each under a page)
    out = tiny_disk / "out"
    daemon = make_daemon("min_free_bytes = 0\n").start()
    client = daemon.client
    task = client.render({"source": str(scenes["long"]), "start_frame": 1, "end_frame": 8,
                          "output_dir": str(out)})  # fmt: skip
    held = wait_until(lambda: (r := client.get(task.id)).paused_reason and r, 120,
                      "the render to pause for its output disk")  # fmt: skip
    assert held.status == "running" and held.paused
    assert held.paused_reason is not None and "output disk full" in held.paused_reason
    assert str(out) in held.paused_reason and held.progress_message == held.paused_reason
    assert client.health()["held"] == {task.id: held.paused_reason}
    resumed = client.pause(task.id, paused=False)  # a person's resume does not end the hold
    assert resumed.paused and resumed.paused_reason == held.paused_reason
    assert client.health()["held"] == {task.id: held.paused_reason}
    sessions = Sessions()  # the dashboard says so too: the task's page and the health page
    web_app = create_web_app(daemon.socket, {"testserver"}, sessions, EventLog())
    with TestClient(web_app, follow_redirects=False) as web:
        assert web.get(f"/login?token={sessions.login_token}").status_code == 303
        assert "paused: output disk full" in web.get(f"/tasks/{task.id}").text
        assert f'paused <a href="/tasks/{task.id}">' in web.get("/health").text
    placed = sorted(out.iterdir())
    assert 1 <= len(placed) <= 3  # paused before the disk filled, not after
    for frame in placed:  # nothing half-written: every file is a whole frame
        with Image.open(frame) as image:
            image.verify()
    assert os.statvfs(tiny_disk).f_bavail > 0
    filler.unlink()  # room again: it goes on by itself
    done = client.wait(task.id, timeout=120)
    assert done.status == "completed", done.error
    assert done.errors == [] and not done.paused and done.paused_reason is None
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{n:04d}.png" for n in range(1, 9)]
    assert client.health()["held"] == {}
    log, _ = client.log(task.id)
    assert "paused (SIGSTOP)" in log and "resumed (SIGCONT)" in log
    # the file's frame size is now known: a submit of a range that cannot fit is refused
    leave_free(tiny_disk, 2 * PAGE)
    before = client.health()["records"]
    with pytest.raises(ApiError) as refused:
        client.render({"source": str(scenes["long"]), "start_frame": 1, "end_frame": 20,
                       "output_dir": str(tiny_disk / "again")})  # fmt: skip
    assert refused.value.http_status == 507
    assert "an earlier render of this file" in str(refused.value)
    assert client.health()["records"] == before


class Disk:
    """A 1 MiB disk whose free space a test sets (4 KiB blocks)."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, fd: int) -> Space:
        return Space(self.free, PAGE, 256 * PAGE)


def test_the_projection_holds_only_while_the_rest_would_not_fit() -> None:
    ctx = TaskContext("t", 1, lambda *report: None)
    holds: list[str | None] = []
    ctx._on_hold = holds.append  # what the record would say
    disk = Disk(free=10 * PAGE)
    guard = SpaceGuard(ctx, -1, Path("/out"), reserve=PAGE, max_hold_s=0.0, free=disk)
    guard.before(100)  # one block + the reserve: fits
    guard.after(100, left=8)  # 8 more blocks + the reserve: 9 of 10 free
    assert guard.sizes == [PAGE] and holds == []
    disk.free = 8 * PAGE
    with pytest.raises(OutputDiskFull, match="8 frame"):
        guard.after(5000, left=8)  # ~6 KiB each now: 8 x 6 KiB + 4 KiB > 32 KiB
    assert holds[0] is not None and "output disk full" in holds[0] and holds[-1] is None
    disk.free = 256 * PAGE  # empty
    big = SpaceGuard(ctx, -1, Path("/out"), reserve=0, max_hold_s=0.0, free=disk)
    big.after(100 * PAGE, left=99)  # a title frame: too soon to call the rest too large
    big.after(PAGE, left=98)  # small frames after it: 98 blocks fit, no hold
    with pytest.raises(OutputDiskTooSmall, match="more than .* whole disk holds"):
        big.before(300 * PAGE)  # one frame larger than the disk
    huge = SpaceGuard(ctx, -1, Path("/out"), reserve=0, max_hold_s=0.0, free=disk)
    for left in (300, 299):
        huge.after(PAGE, left=left)  # 1 block each, 300 left: more than 256 blocks, but…
    with pytest.raises(OutputDiskTooSmall, match="smallest so far"):
        huge.after(PAGE, left=298)  # …three frames agree: no wait can make it fit
    assert on_disk(0, PAGE) == PAGE and on_disk(PAGE + 1, PAGE) == 2 * PAGE


def test_frame_sizes_are_a_cache_that_only_takes_its_own_names(tmp_path: Path) -> None:
    sizes = FrameSizes(tmp_path / "sizes")
    key = "a" * 64
    assert sizes.get(key) is None
    sizes.put(key, 1234)
    assert sizes.get(key) == 1234
    sizes.put("../../etc/x", 1)  # never a path outside its folder
    assert sorted(p.name for p in (tmp_path / "sizes").iterdir()) == [f"{key}.json"]
    (tmp_path / "sizes" / f"{key}.json").write_text("{torn")
    assert sizes.get(key) is None


def test_check_space_renders_a_trial_frame_and_refuses_a_job_that_cannot_fit(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], tiny_disk: Path
) -> None:
    filler = leave_free(tiny_disk, 2 * PAGE)  # 2 of the 3 frames would fit
    daemon = make_daemon("min_free_bytes = 0\n").start()
    before = daemon.client.health()["records"]
    again = tiny_disk / "again"
    done = subprocess.run([sys.executable, "-m", "pi_render", "render", str(scenes["tiny"]),
                           "--output", str(again), "--check-space", "--json",
                           "--socket", str(daemon.socket)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode != 0 and "as a trial frame (1) came out" in done.stderr, done.stderr
    assert daemon.client.health()["records"] == before  # nothing submitted
    assert not again.exists() or not any(again.iterdir())  # the trial frame went elsewhere
    spool = daemon.data_dir / "spool"
    assert not (spool.exists() and any(spool.iterdir()))
    filler.unlink()
    fits = daemon.client.render({"source": str(scenes["tiny"]), "output_dir": str(again),
                                 "check_space": True})  # fmt: skip
    assert daemon.client.wait(fits.id, timeout=120).status == "completed"
    assert len(list(again.iterdir())) == 3


def test_retention_forgets_old_frame_sizes(tmp_path: Path) -> None:
    sizes = FrameSizes(tmp_path / "sizes")
    old, new = "0" * 64, "1" * 64
    sizes.put(old, 10)
    sizes.put(new, 20)
    os.utime(tmp_path / "sizes" / f"{old}.json", (1000.0, 1000.0))
    sizes.prune(older_than=2000.0)
    assert (sizes.get(old), sizes.get(new)) == (None, 20)


def test_a_persons_resume_does_not_end_a_hold_and_their_pause_outlives_it() -> None:
    signals: list[bool] = []  # True: SIGSTOP, False: SIGCONT
    ctx = TaskContext("t", 1, lambda *report: None)
    ctx.on_pause(signals.append)
    ctx.hold("output disk full")
    assert signals == [True] and ctx.paused
    assert ctx.set_paused(False)  # the person resumes: still held, Blender stays stopped
    assert signals == [True] and ctx.paused
    ctx.set_paused(True)  # the person pauses during the hold…
    ctx.hold(None)  # …and the hold ends: still theirs, still stopped
    assert signals == [True] and ctx.paused and ctx.held is None
    ctx.set_paused(False)
    assert signals == [True, False] and not ctx.paused


def test_trial_frames_are_one_per_request_and_one_per_uid(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], tmp_path: Path
) -> None:
    daemon = make_daemon("min_free_bytes = 0\n").start()
    render = {"type": "render", "args": {"source": str(scenes["tiny"]), "check_space": True,
                                         "output_dir": str(tmp_path / "out")}}  # fmt: skip
    with pytest.raises(ApiError) as refused:  # a batch of trials would hold the request long
        daemon.client.submit_many([render, render])
    assert refused.value.http_status == 422 and "not in a batch" in str(refused.value)
    slots = trial.TrialSlots(most=2)
    with slots.take(1000):
        with pytest.raises(trial.TrialsBusy, match="one of yours"):
            with slots.take(1000):
                pass
        with slots.take(1001):
            with pytest.raises(trial.TrialsBusy):
                with slots.take(1002):
                    pass
    with slots.take(1000):  # each slot came back
        pass


HOLD_CHILD = (
    "import time\nprint(\"Saved: '/nowhere/frame_0001.png'\", flush=True)\n"
    "print('END', flush=True)\ntime.sleep(1000)\n"
)  # then nothing: a hang


Running = tuple[FakeClock, threading.Thread, list[BaseException]]


def run_with_a_hold(tmp_path: Path, stall_s: float, max_pause_s: float,
                    person_pauses: bool) -> Running:  # fmt: skip
    """Blender (a child that saves a frame, then hangs) held 1000 s by the output disk inside
    its output loop, on a fake clock; a person may pause it 10 s before the hold ends."""
    clock = FakeClock()
    ctx = TaskContext("t", 1, lambda *report: None, clock=clock)

    def on_event(event: BlenderEvent) -> None:
        if event.kind == "saved":
            ctx.hold("output disk full")
            clock.advance(990)
            if person_pauses:
                ctx.set_paused(True)
            clock.advance(10)
            ctx.hold(None)

    log = open(tmp_path / "log.txt", "w")
    process = BlenderProcess([sys.executable, "-c", HOLD_CHILD], log, ctx, on_event, None,
                             stall_s, 1.0, tmp_path / "pid", max_pause_s=max_pause_s)  # fmt: skip
    thread, failure = run_in_background(process, then=log.close)
    wait_until(lambda: "END" in (tmp_path / "log.txt").read_text(), what="the last line")
    wait_until(lambda: clock.waiting() > 0, what="the loop to wait on the clock")
    return clock, thread, failure


def test_after_a_hold_the_hang_watchdog_counts_from_its_end(tmp_path: Path) -> None:
    clock, thread, failure = run_with_a_hold(tmp_path, stall_s=600, max_pause_s=10_000,
                                             person_pauses=False)  # fmt: skip
    clock.advance(600)  # 600 s after the hold: not 600 + the hold's 1000
    thread.join(30)
    assert not thread.is_alive() and [type(f) for f in failure] == [RenderStalled]


def test_a_persons_pause_during_a_hold_is_timed_from_their_pause(tmp_path: Path) -> None:
    clock, thread, failure = run_with_a_hold(tmp_path, stall_s=600, max_pause_s=100,
                                             person_pauses=True)  # fmt: skip
    assert thread.is_alive()  # paused 10 s ago, not 1000 (the hold's)
    clock.advance(95)  # 105 s after their pause
    thread.join(30)
    assert not thread.is_alive() and [type(f) for f in failure] == [PausedTooLong]
