"""Shared fixtures: a real daemon subprocess on a real socket with real SQLite files."""

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from blender_env import blender_or_skip, run_blender_script

from pi_render.api.client import Client

if TYPE_CHECKING:
    from pg_cluster import PostgresCluster

    from pi_render.processor.blender_run import BlenderProcess
from pi_render.errors import DaemonUnreachable
from pi_render.task.record import TaskRecord

PLUGINS = Path(__file__).parent / "plugins"
MAKE_SCENE = (
    Path(__file__).parent.parent / "pi_render" / "processor" / "scripts" / "sample_scene.py"
)
SCENES = {
    "tiny": ("3", "1", "32"),
    "slow": ("12", "800", "64"),
    "long": ("20", "1", "32"),
    "sixty": ("60", "1", "8"),
}
START_TIMEOUT_S = 30.0


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(0.02)


def assert_databases_intact(data_dir: Path) -> int:
    """`PRAGMA integrity_check` passes on every SQLite file under `data_dir`; returns how many."""
    magic = b"SQLite format 3\0"
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.read_bytes()[:16] == magic]
    assert files, f"no SQLite database under {data_dir}"
    for path in files:
        try:
            with sqlite3.connect(path) as db:
                found = db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise AssertionError(f"{path}: {exc}") from None
        assert found == [("ok",)], path
    return len(files)


def started(record: TaskRecord) -> datetime:
    """When the task last started; fails the test if it never did."""
    assert record.started_at is not None, f"task {record.id} never started"
    return record.started_at


class DaemonProcess:
    """A `pi-render serve` subprocess with its config, log, socket and client."""

    def __init__(self, root: Path, socket_dir: Path, config: str = "",
                 extra_env: dict[str, str] | None = None,
                 data_dir: Path | None = None) -> None:  # fmt: skip
        self.root = root
        self.extra_env = extra_env or {}
        self.data_dir = data_dir or root / "data"
        self.socket = socket_dir / "api.sock"
        self.config_path = root / "config.toml"
        grace = "" if "shutdown_grace_s" in config else "shutdown_grace_s = 5\n"
        self.config_path.write_text(  # top-level keys first: TOML tables ([workers]) come last
            f'data_dir = "{self.data_dir}"\nsocket = "{self.socket}"\n'
            f'task_modules = ["pi_render_testtasks"]\n{grace}{config}'
            "\n[retry.explode]\nmax_attempts = 1\n"  # tests of plain failure want it at once
        )
        self.log_path = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket, timeout=60)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
        env.pop("PI_RENDER_SOCKET", None)
        env.pop("PI_RENDER_DATA_DIR", None)
        env.update(self.extra_env)
        return env

    def spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "pi_render", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )

    def start(self) -> "DaemonProcess":
        self.proc = self.spawn()
        wait_until(self._answers, START_TIMEOUT_S, "the daemon to answer on its socket")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        try:
            self.client.health()
        except DaemonUnreachable:
            return False
        return True

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """AF_UNIX paths must be short, and pytest's tmp_path can be long."""
    path = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_daemon(tmp_path: Path, socket_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(config: str = "", name: str = "d",
             extra_env: dict[str, str] | None = None) -> DaemonProcess:  # fmt: skip
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        sock_dir = socket_dir / name
        sock_dir.mkdir(exist_ok=True)
        daemon = DaemonProcess(root, sock_dir, config, extra_env)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return make_daemon().start()


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scenes made by real Blender: `tiny` (3 frames, 32×32, 1 sample), `slow` (12 frames,
    64×64, 800 samples: a test can catch it mid-render), `long` (20 tiny frames), `sixty`
    (60 frames of 8×8: the farm's jobs)."""
    blender = blender_or_skip()
    folder = tmp_path_factory.mktemp("scenes")
    for name, args in SCENES.items():
        run_blender_script(blender, MAKE_SCENE, str(folder / f"{name}.blend"), *args)
    return {name: folder / f"{name}.blend" for name in SCENES}


@pytest.fixture(scope="session")
def bpy_python() -> str:
    """A Python with the bpy wheel (CI makes one: see .ci/run); required in CI."""
    found = os.environ.get("PI_RENDER_BPY_PYTHON")
    if found and Path(found).exists():
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI must provide PI_RENDER_BPY_PYTHON (a venv with bpy 5.0.1)")
    pytest.skip("no Python with bpy (set PI_RENDER_BPY_PYTHON)")


MAKE_PROJECT = Path(__file__).parent / "blender" / "make_project.py"


@pytest.fixture(scope="session")
def project34(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of every kind of dependency, made by Debian's Blender (3.4): see make_project."""
    folder = tmp_path_factory.mktemp("project34")
    run_blender_script(blender_or_skip(), MAKE_PROJECT, str(folder))
    return folder


@pytest.fixture(scope="session")
def project50(tmp_path_factory: pytest.TempPathFactory, bpy_python: str) -> Path:
    """The same project made by the bpy 5.0.1 wheel."""
    folder = tmp_path_factory.mktemp("project50")
    subprocess.run([bpy_python, str(MAKE_PROJECT), str(folder)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return folder


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has not one block left."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            try:
                while True:
                    handle.write(bytes(chunk))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def all_records(client: Client) -> list[TaskRecord]:
    """Every record, a page at a time."""
    records: list[TaskRecord] = []
    while page := client.list(limit=1000, offset=len(records)):
        records.extend(page)
    return records


def assert_journal_runs(records: list[TaskRecord], journal: Path) -> None:
    """Journal tasks (tests/plugins) log `<id> <attempt>` per run: each run was a recorded
    attempt (a kill between the record and the run leaves an attempt with no run), and the
    completing run was the last one: nothing ran after it was recorded completed."""
    seen: dict[str, list[int]] = {}
    for line in lines(journal):
        task_id, attempt = line.split()
        seen.setdefault(task_id, []).append(int(attempt))
    for record in records:
        assert record.status == "completed", record
        runs = seen[record.id]
        assert runs == sorted(set(runs)) and runs[-1] == record.attempts, (record, runs)
        assert record.result == {"attempt": record.attempts}, record


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator["PostgresCluster"]:
    """One real PostgreSQL server for the session (see tests/pg_cluster.py)."""
    from pg_cluster import cluster_or_skip

    cluster = cluster_or_skip()
    yield cluster
    cluster.close()


@pytest.fixture
def pg_url(pg_cluster: "PostgresCluster") -> str:
    """A fresh, empty database on it for one test."""
    return pg_cluster.new_database()


FAKE_BLENDER = Path(__file__).parent / "fakes" / "fake_blender.py"


def start_fake_renderer(make_daemon: Callable[..., DaemonProcess], sleep: float = 0.05,
                        mode: str = "render", name: str = "d",
                        tables: str = "") -> DaemonProcess:  # fmt: skip
    """A daemon whose Blender is the fake one (tests/fakes/fake_blender.py) in `mode`, each
    frame taking `sleep` seconds; one default and one render worker; `tables`: more config."""
    config = (f'blender = "{FAKE_BLENDER}"\nblender_env_keep = ["PATH", "FAKE_BLENDER", '
              f'"FAKE_BLENDER_SLEEP"]\n[workers]\ndefault = 1\nrender = 1\n{tables}')  # fmt: skip
    env = {"FAKE_BLENDER": mode, "FAKE_BLENDER_SLEEP": str(sleep)}
    return make_daemon(config, name=name, extra_env=env).start()


def run_in_background(process: "BlenderProcess",
                      then: Callable[[], None] = lambda: None,
                      ) -> tuple[threading.Thread, list[BaseException]]:  # fmt: skip
    """Run a BlenderProcess on its own thread, then `then`; what it raised is kept for the test
    to read."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            process.run()
        except BaseException as exc:  # noqa: B036  (the test reads it)
            failure.append(exc)
        finally:
            then()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failure
