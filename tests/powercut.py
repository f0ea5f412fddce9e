"""The power-cut harness: a daemon whose data dir lives on LazyFS (tests/lazyfs.py), driven by
submits, renders (fake Blender) and retries, cut at random points, restarted, and checked.

What it checks, after every cut and at the end:
- every acknowledged submit is there after the restart, and in the end reaches a final state;
- every SQLite database passes `PRAGMA integrity_check`;
- nothing a client saw completed runs again (the `journal` task type appends each real run
  to a file outside LazyFS, fsynced), and every rerun ran as a new attempt number;
- every frame a completed render lists is on disk with its SHA-256.

`noop` tasks are in the mix because they are pure (Processor.pure): their start is committed
without an fsync, beside the other tasks' durable writes.
"""

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import FAKE_BLENDER, DaemonProcess, assert_databases_intact, wait_until

from pi_render.api.client import Client
from pi_render.errors import PiRenderError

LAZYFS = Path(__file__).parent / "lazyfs.py"


class LazyMount:
    """A LazyFS process mounted at `mountpoint`, with its control socket."""

    def __init__(self, folder: Path) -> None:
        self.mountpoint = folder / "mnt"
        self.mountpoint.mkdir()
        self.control = folder / "control.sock"
        self.log = open(folder / "lazyfs.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(LAZYFS), str(self.mountpoint),
                                      str(self.control)], stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.wait_mounted()

    def wait_mounted(self, after: int = 0) -> None:
        """Until lazyfs has mounted more than `after` times."""

        def mounted() -> bool:
            assert self.proc.poll() is None, "lazyfs exited"
            return self.control.exists() and self.mounts() > after

        try:
            wait_until(mounted, 30, "lazyfs to mount")
        except AssertionError:
            os.kill(self.proc.pid, signal.SIGUSR1)  # its threads' stacks, into its log
            time.sleep(2)
            raise

    def mounts(self) -> int:
        return int(self.ask("status").split()[2])

    def ask(self, line: str, timeout: float | None = 30) -> str:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.control))
            conn.sendall(line.encode() + b"\n")
            return conn.makefile().readline().strip()

    def arm(self, operations: int) -> threading.Event:
        """Cut after `operations` more changing operations; the event is set when it has."""
        happened = threading.Event()

        def wait() -> None:
            try:
                self.ask(f"arm {operations}", timeout=None)
            finally:
                happened.set()

        threading.Thread(target=wait, daemon=True).start()
        return happened

    def remount(self) -> None:
        """Power back on: unmount (the lazyfs process mounts again with only what was synced)."""
        before = self.mounts()

        def unmounted() -> bool:  # busy until the last killed process has let go of it
            return subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                                  capture_output=True).returncode == 0  # fmt: skip

        wait_until(unmounted, 30, "the unmount")
        self.wait_mounted(after=before)

    def close(self) -> None:
        try:
            self.ask("quit", timeout=5)
        except OSError:
            pass
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def kill_everything_under(path: Path, spare: int) -> None:
    """kill -9 every process that names `path` (the daemon, its fake Blenders) but `spare`
    (LazyFS itself): the power is off for all of them at once."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), spare):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass
class Outcome:
    acknowledged: dict[str, str] = field(default_factory=dict)  # id → type
    seen_completed: dict[str, int] = field(default_factory=dict)  # id → journal runs then
    violations: list[str] = field(default_factory=list)
    cuts: int = 0


def journal_runs(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []


def submit_one(client: Client, rng: random.Random, work: Path, scene: Path) -> tuple[str, str]:
    kind = rng.choice(["journal", "journal", "flaky", "render", "noop"])
    if kind == "noop":  # pure: its start is committed without an fsync
        record = client.submit("noop", {"sleep_s": rng.choice([0, 0.01])})
    elif kind == "journal":
        record = client.submit("journal", {"journal": str(work / "journal")})
    elif kind == "flaky":
        marker = work / "flaky" / f"{time.time_ns()}"
        record = client.submit("flaky", {"marker_dir": str(marker), "fail_times": 1})
    else:
        record = client.render({"source": str(scene), "force": True})
    return record.id, kind


def load_and_watch(daemon: DaemonProcess, rng: random.Random, outcome: Outcome, work: Path,
                   scene: Path, stop: threading.Event) -> None:  # fmt: skip
    """Submit and watch until `stop` (the cut): an id counts as acknowledged only once its
    submit answered; a completion counts once a client has read it."""
    with Client(daemon.socket, timeout=10) as client:
        while not stop.is_set():
            try:
                task_id, kind = submit_one(client, rng, work, scene)
                outcome.acknowledged[task_id] = kind
                known = sorted(outcome.acknowledged)
                for seen in rng.sample(known, min(3, len(known))):
                    if client.get(seen).status.value == "completed":
                        runs = journal_runs(work / "journal").count(seen)
                        outcome.seen_completed.setdefault(seen, runs)
            except (PiRenderError, OSError, ValueError):
                if stop.wait(0.05):  # the power is going out: requests fail until it is
                    return


def check_after_restart(daemon: DaemonProcess, outcome: Outcome) -> None:
    for task_id, kind in outcome.acknowledged.items():
        try:
            record = daemon.client.get(task_id)
        except PiRenderError as exc:
            outcome.violations.append(f"cut {outcome.cuts}: acknowledged {kind} {task_id} "
                                      f"is gone ({exc})")  # fmt: skip
            continue
        if task_id in outcome.seen_completed and record.status.value != "completed":
            outcome.violations.append(f"cut {outcome.cuts}: {task_id} was completed, now "
                                      f"{record.status.value}")  # fmt: skip


def attempts_of(journal: Path) -> dict[str, list[int]]:
    """Each journal task's runs, by the attempt number each ran as."""
    found: dict[str, list[int]] = {}
    for line in journal.read_text().splitlines() if journal.exists() else []:
        task_id, attempt = line.split()
        found.setdefault(task_id, []).append(int(attempt))
    return found


def check_at_the_end(daemon: DaemonProcess, outcome: Outcome, work: Path) -> None:
    for task_id, attempts in attempts_of(work / "journal").items():
        if attempts != sorted(set(attempts)):  # the fencing token: a rerun is a new attempt
            outcome.violations.append(f"end: {task_id} ran as attempts {attempts}")
    runs = journal_runs(work / "journal")
    for task_id, kind in outcome.acknowledged.items():
        try:
            record = daemon.client.wait(task_id, 120)
        except PiRenderError as exc:
            outcome.violations.append(f"end: {kind} {task_id}: {exc}")
            continue
        if record.status.value != "completed":
            outcome.violations.append(f"end: {kind} {task_id} ended {record.status.value}: "
                                      f"{record.error}")  # fmt: skip
        if task_id in outcome.seen_completed and runs.count(task_id) > outcome.seen_completed[
                task_id]:  # fmt: skip
            outcome.violations.append(f"end: {task_id} ran again after it was seen completed")
        for frame in (record.result or {}).get("frames", []) if kind == "render" else []:
            path = Path(frame["path"])
            if not path.exists():
                outcome.violations.append(f"end: {task_id} frame {frame['frame']} missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != frame["sha256"]:
                outcome.violations.append(f"end: {task_id} frame {frame['frame']} corrupt")


@contextmanager
def lazy_daemon(folder: Path, socket_dir: Path, env: dict[str, str] | None = None,
                ) -> Iterator[tuple[LazyMount, DaemonProcess]]:  # fmt: skip
    mount = LazyMount(folder)
    data = mount.mountpoint / "data"
    config = (f'blender = "{FAKE_BLENDER}"\nblender_env_keep = ["PATH", "FAKE_BLENDER", '
              f'"FAKE_BLENDER_SLEEP"]\noutput_root = "{mount.mountpoint / "out"}"\n'
              f"shutdown_grace_s = 1\n[workers]\ndefault = 2\nrender = 1\n"
              "[retry.flaky]\nmax_attempts = 5\nbase_delay_s = 0.05\n"
              "max_delay_s = 0.1\n")  # fmt: skip
    daemon = DaemonProcess(folder, socket_dir, config, {"FAKE_BLENDER": "render",
                           "FAKE_BLENDER_SLEEP": "0.01", **(env or {})}, data_dir=data)  # fmt: skip
    try:
        yield mount, daemon
    finally:
        kill_everything_under(mount.mountpoint, mount.proc.pid)
        daemon.close()
        mount.close()


def run_power_cuts(mount: LazyMount, daemon: DaemonProcess, cuts: int, seed: int, work: Path,
                   scene: Path, pick_cut: Callable[[random.Random], int] | None = None,
                   ) -> Outcome:  # fmt: skip
    """`cuts` rounds of: start, load, a cut after a random number of changing operations,
    kill -9 of everything on the mount, remount, integrity check, restart and check."""
    rng = random.Random(seed)
    outcome = Outcome()
    for _ in range(cuts):
        daemon.start()
        check_after_restart(daemon, outcome)
        cut = mount.arm((pick_cut or (lambda r: r.randint(1, 3000)))(rng))
        loader = threading.Thread(target=load_and_watch,
                                  args=(daemon, rng, outcome, work, scene, cut))  # fmt: skip
        loader.start()
        if not cut.wait(120):
            mount.ask("cut")
        daemon.kill()  # the daemon and its Blenders lose power together
        kill_everything_under(mount.mountpoint, mount.proc.pid)
        loader.join(60)
        outcome.cuts += 1
        mount.remount()
        try:
            assert_databases_intact(daemon.data_dir)
        except AssertionError as exc:
            outcome.violations.append(f"cut {outcome.cuts}: {exc}")
    daemon.start()
    check_after_restart(daemon, outcome)
    check_at_the_end(daemon, outcome, work)
    shutil.rmtree(work / "flaky", ignore_errors=True)
    return outcome
