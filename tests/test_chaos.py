"""Chaos: a daemon under a mixed load (renders with real Blender, journal tasks, tasks that fail
and retry, tasks that die, a cron job) killed with SIGKILL at random moments, and its Blender
too, restarted each time. Afterwards nothing is lost, nothing ran after it was recorded
completed, every database passes `PRAGMA integrity_check`, and frames rendered twice ≤ kills.

CI runs ≈20 kills; `PI_RENDER_CHAOS_KILLS=200 PI_RENDER_CHAOS_RENDERS=30` is the documented run.
"""

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from blender_env import blender_or_skip
from conftest import (
    DaemonProcess,
    all_records,
    assert_databases_intact,
    assert_journal_runs,
    lines,
    wait_until,
)

from pi_render.api.client import ApiError, Client
from pi_render.errors import DaemonUnreachable
from pi_render.task.record import TaskRecord

KILLS = int(os.environ.get("PI_RENDER_CHAOS_KILLS", "20"))
RENDERS = int(os.environ.get("PI_RENDER_CHAOS_RENDERS", "6"))
JOURNALS = int(os.environ.get("PI_RENDER_CHAOS_JOURNALS", str(10 * KILLS)))
FLAKY, DOOMED = max(3, KILLS // 4), max(2, KILLS // 10)
BLENDER_KILL_CHANCE = 0.3
LIFE_S = 4.0  # the longest a life of the daemon waits for its work events
SCENE_FRAMES = 20  # the `long` scene's
# Blender runs bare here: the wrapper below has it write a journal outside its snapshot, which
# the sandbox (tested in test_render_project.py) would rightly forbid
CONFIG = """sandbox = "none"
[workers]
default = 2
render = 1
[retry.render]
max_attempts = 1000
base_delay_s = 0.2
max_delay_s = 1
jitter = 0
[retry.flaky]
max_attempts = 1000
base_delay_s = 0.1
max_delay_s = 0.5
jitter = 0
"""
CRON = '[[cron]]\nname = "tick"\nschedule = "*/2 * * * * *"\ntask = "noop"\n'
# inside Blender: one fsynced line per frame begun (render_pre) and per frame written
# (render_write), `<time> <frame> <path> <event>`. Blender calls render_write after it has saved
# the file and printed `Saved:`, where the daemon lands it: a kill between the two leaves a frame
# landed but not journalled as written, so coverage is judged by the `pre` lines (a frame cannot
# land before it begins) and repeats by the `write` lines (measured: Blender 3.4 and 5.0 print
# `Saved:`, then run render_post, then render_write)
FRAME_JOURNAL_SCRIPT = """import os, time, bpy
def journal(event):
    def write(scene, *_):
        path = scene.render.frame_path()
        line = f"{{time.time():.6f}} {{scene.frame_current}} {{path}} {{event}}\\n"
        fd = os.open({journal!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line.encode()); os.fsync(fd); os.close(fd)
    return write
bpy.app.handlers.render_pre.append(journal("pre"))
bpy.app.handlers.render_write.append(journal("write"))
"""
# the `blender` the daemon runs: real Blender with the frame journal loaded before it renders
WRAPPER = """#!{python}
import os, sys
args = sys.argv[1:]
if "-f" in args:
    args[args.index("-f"):args.index("-f")] = ["--python", {script!r}]
os.execv({blender!r}, [{blender!r}, *args])
"""


@dataclass
class Plan:
    """What to submit, in order; `acked` holds the ids the daemon acknowledged."""

    items: list[tuple[str, dict[str, Any]]]
    next: int = 0
    acked: dict[str, str] = field(default_factory=dict)  # id → type


class Submitter(threading.Thread):
    """Submits the plan up to item `until` (spreading the work over the kills), or until the
    daemon goes away (killed mid-request)."""

    def __init__(self, client: Client, plan: Plan, until: int | None = None) -> None:
        super().__init__(daemon=True)
        self.client, self.plan = client, plan
        self.until = len(plan.items) if until is None else min(until, len(plan.items))

    def run(self) -> None:
        while self.plan.next < self.until:
            type_name, args = self.plan.items[self.plan.next]
            self.plan.next += 1  # a request cut by a kill may or may not exist: both are fine
            try:
                record = self.client.submit(type_name, args)
            except (DaemonUnreachable, ApiError):
                return
            self.plan.acked[record.id] = type_name


def make_plan(rng: random.Random, tmp: Path, scene: Path) -> Plan:
    items: list[tuple[str, dict[str, Any]]] = []
    items += [("journal", {"journal": str(tmp / "journal")}) for _ in range(JOURNALS)]
    items += [("flaky", {"marker_dir": str(tmp / f"flaky{i}"), "fail_times": 2})
              for i in range(FLAKY)]  # fmt: skip
    items += [("explode", {"message": f"doomed {i}"}) for i in range(DOOMED)]
    for i in range(RENDERS):
        count = rng.randint(5, SCENE_FRAMES)
        start = rng.randint(1, SCENE_FRAMES - count + 1)
        frames = {"start_frame": start, "end_frame": start + count - 1}
        output = str(tmp / f"out{i}")
        items.append(("render", {"source": str(scene), "output_dir": output, **frames}))
    rng.shuffle(items)
    return Plan(items)


def blender_pids(blender: Path, data_dir: Path) -> list[int]:
    """Blender processes rendering for this daemon (their command line names its data dir)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == str(blender).encode() and str(data_dir).encode() in b" ".join(argv):
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.timeout(600 + 15 * KILLS)
def test_mixed_load_survives_kill_9_of_daemon_and_blender(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path]
) -> None:
    seed = int(os.environ.get("PI_RENDER_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    blender = blender_or_skip().resolve()
    frame_journal = tmp_path / "frames"
    script = tmp_path / "frame_journal.py"
    script.write_text(FRAME_JOURNAL_SCRIPT.format(journal=str(frame_journal)))
    wrapper = tmp_path / "blender"
    wrapper.write_text(WRAPPER.format(python=sys.executable, script=str(script),
                                      blender=str(blender)))  # fmt: skip
    wrapper.chmod(0o755)
    config = f'blender = "{wrapper}"\nrender_stop_grace_s = 2\n{CONFIG}{CRON}'
    daemon = make_daemon(config)
    plan = make_plan(rng, tmp_path, scenes["long"])
    journal = tmp_path / "journal"
    blender_kills = 0

    def events() -> int:
        return len(lines(journal)) + len(lines(frame_journal))

    for kill in range(KILLS):
        daemon.start()
        share = rng.randint(1, 2 * len(plan.items) // KILLS + 1)  # about an even share per life
        submitter = Submitter(daemon.client, plan, plan.next + share)
        submitter.start()
        if rng.random() < 0.5:  # at a random point of the work: precise, often mid-write
            settle_on(events, events() + rng.randrange(0, 30), submitter, daemon.client)
        else:  # at a random time: long enough, sometimes, for Blender to get frames out
            threading.Event().wait(rng.uniform(0.5, 4.0))
        if blender_kills == 0 or rng.random() < BLENDER_KILL_CHANCE:  # at least one
            for pid in poll(lambda: blender_pids(blender, daemon.data_dir), timeout=3) or []:
                os.kill(pid, signal.SIGKILL)
                blender_kills += 1
            settle_on(events, events() + rng.randrange(0, 10), submitter, daemon.client)
        daemon.kill()
        submitter.join(30)
        assert_databases_intact(daemon.data_dir)
        print(
            f"kill {kill + 1}: {len(plan.acked)} acked, {events()} events, "
            f"{len(lines(frame_journal))} frames, {blender_kills} Blender kills"
        )

    daemon.config_path.write_text(daemon.config_path.read_text().replace(CRON, ""))
    daemon.start()
    Submitter(daemon.client, plan).run()
    assert plan.next == len(plan.items)

    def settled() -> list[TaskRecord] | None:
        records = all_records(daemon.client)
        return records if all(r.status.is_final for r in records) else None

    records = wait_until(settled, timeout=600, what="every task to reach a final state")
    health = daemon.client.health()
    assert daemon.terminate() == 0
    databases = assert_databases_intact(daemon.data_dir)
    wait_until(lambda: not blender_pids(blender, daemon.data_dir), timeout=10,
               what="no Blender to outlive the daemon")  # fmt: skip

    by_id = {r.id: r for r in records}
    assert set(plan.acked) <= set(by_id), "an acknowledged task was lost"
    types = Counter(r.type for r in records)
    assert_journal_runs([r for r in records if r.type == "journal"], journal)
    for record in records:
        if record.type == "flaky":
            # failed twice, then succeeded (a kill may cut a failure before it was recorded)
            runs = len(list(Path(record.args["marker_dir"]).iterdir()))
            assert record.status == "completed" and record.errors and runs >= 3, record
        elif record.type == "explode":
            assert record.status == "failed" and record.error is not None, record
            assert "doomed" in record.error.message, record
        elif record.type == "noop":
            assert record.origin and record.origin.startswith("cron:tick@"), record
    cron_fires = [r.origin for r in records if r.type == "noop"]
    assert cron_fires and len(cron_fires) == len(set(cron_fires)), "a cron fire ran twice"
    renders = [r for r in records if r.type == "render"]
    rendered_twice = check_renders(renders, frame_journal)
    assert rendered_twice <= KILLS + blender_kills, (rendered_twice, KILLS, blender_kills)
    assert blender_kills >= 1, "no Blender was caught running to be killed"
    assert sum(q["high"] + q["normal"] + q["taken"] for q in health["queues"].values()) == 0
    print(f"chaos: {KILLS} daemon kills, {blender_kills} Blender kills, {dict(types)} tasks, "
          f"{rendered_twice} frames rendered twice, {databases} databases intact")  # fmt: skip


def poll(predicate: Callable[[], list[int]], timeout: float) -> list[int] | None:
    """`predicate`'s first non-empty answer within `timeout` seconds, else None."""
    try:
        found: list[int] = wait_until(predicate, timeout=timeout, what="")
    except AssertionError:
        return None
    return found


def settle_on(events: Callable[[], int], target: int, submitter: Submitter, client: Client) -> None:
    """Wait for `target` events, for the work to run out, or for LIFE_S seconds (a render's
    frames come slowly: a life must not wait on many of them)."""
    ends = time.monotonic() + LIFE_S
    wait_until(lambda: events() >= target or time.monotonic() > ends or (
        not submitter.is_alive() and not work_left(client)),
        timeout=LIFE_S + 60, what="work to happen before the kill")  # fmt: skip


def work_left(client: Client) -> bool:
    try:
        counts = client.health()["records"]
    except (DaemonUnreachable, ApiError):
        return True
    return any(counts.get(status) for status in ("pending", "running", "retrying"))


def check_renders(renders: list[TaskRecord], frame_journal: Path) -> int:
    """Every render has all its frames as 32×32 PNGs and no frame was rendered after it was
    recorded completed; returns how many frame renders were repeats."""
    begun: dict[str, list[tuple[float, int]]] = {}
    written: dict[str, list[tuple[float, int]]] = {}
    for line in lines(frame_journal):
        stamp, frame, rest = line.split(" ", 2)
        path, event = rest.rsplit(" ", 1)
        task_id = Path(path).parent.parent.name  # <spool>/<task id>/partial/frame_####.png
        journal = begun if event == "pre" else written
        journal.setdefault(task_id, []).append((float(stamp), int(frame)))
    repeats = 0
    for record in renders:
        assert record.status == "completed", record
        args, result = record.args, record.result or {}
        expected = list(range(args["start_frame"], args["end_frame"] + 1))
        assert [f["frame"] for f in result["frames"]] == expected, record
        folder = Path(args["output_dir"])
        assert sorted(p.name for p in folder.iterdir()) == sorted(  # no partial or stray file
            Path(f["path"]).name for f in result["frames"]), record  # fmt: skip
        for frame in result["frames"]:
            head = Path(frame["path"]).read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[16:24] == bytes.fromhex(
                "0000002000000020"), frame  # fmt: skip
        assert record.finished_at is not None
        done_at = record.finished_at.replace(tzinfo=record.finished_at.tzinfo or timezone.utc)
        stamps = begun.get(record.id, []) + written.get(record.id, [])
        late = [f for t, f in stamps if datetime.fromtimestamp(t, timezone.utc) > done_at]
        assert not late, f"{record.id} rendered frames {late} after it completed"
        started = {f for _, f in begun.get(record.id, [])}
        assert started >= set(expected), f"{record.id}: frames never rendered"
        counts = Counter(f for _, f in written.get(record.id, []))
        repeats += sum(n - 1 for n in counts.values())
    return repeats
