"""Load generation against a pi-render daemon's socket API, shared by bench/load.py,
bench/soak.py and tests/test_load_soak.py, so the CI test and the full-size runs measure the same
way.

It imports nothing of pi_render: requests go through plain httpx over the Unix socket (a thin
client side matters on a small host, where clients and daemon share the CPUs), and the daemon
under test is a `python -m pi_render serve` subprocess.
"""

import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parent.parent
KINDS = ("submit", "status", "list", "wait")  # the mixed load, in the order each client cycles
MAX_BATCH = 1000  # the most tasks POST /tasks/batch takes
KEEP_ERRORS = 5  # error messages kept verbatim (the rest are only counted)
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# numbers about a process (Linux /proc)


def percentile(values: Sequence[float], pct: int) -> float:
    """The pct-th percentile (inclusive method); the value itself for a single sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS)."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """The most resident memory the process ever had (VmHWM)."""
    return _status_kib(pid, "VmHWM") / 1024


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary + not) per thread id: each wake-up of a sleeping thread is one,
    so the deltas over an idle window show which threads poll."""
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue  # the thread ended meanwhile
        counts[int(task.name)] = sum(
            int(line.split()[1]) for line in lines if "ctxt_switches:" in line
        )
    return counts


# ---------------------------------------------------------------------------------------------
# talking to the daemon


class ApiFailure(Exception):
    """Raised when the daemon answers with a status other than 2xx."""


class Api:
    """One keep-alive connection pool to the daemon, one per client thread."""

    def __init__(self, socket: Path, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://pi-render",
            timeout=timeout,
        )

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self._http.request(method, path, **kw)
        if not 200 <= response.status_code < 300:
            raise ApiFailure(f"{method} {path} -> {response.status_code}: {response.text[:200]}")
        return response.json()

    def submit(self, type_name: str = "noop") -> str:
        return str(self.call("POST", "/tasks", json={"type": type_name})["id"])

    def submit_batch(self, count: int, type_name: str = "noop") -> list[str]:
        body = {"tasks": [{"type": type_name}] * count}
        return [str(record["id"]) for record in self.call("POST", "/tasks/batch", json=body)]

    def status(self, task_id: str) -> dict[str, Any]:
        record: dict[str, Any] = self.call("GET", f"/tasks/{task_id}")
        return record

    def list(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        records: list[dict[str, Any]] = self.call("GET", "/tasks", params=params)
        return records

    def wait(self, task_id: str, timeout_s: float) -> dict[str, Any]:
        """One long-poll: the record once final, or as it is after `timeout_s`."""
        record: dict[str, Any] = self.call(
            "GET", f"/tasks/{task_id}/wait", params={"timeout": timeout_s}, timeout=timeout_s + 30
        )
        return record

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "/health")
        return answer

    def unfinished(self) -> int:
        """Pending or running tasks, at most 1 of each counted: a cheap indexed "is it done?"."""
        return sum(len(self.list(1, status)) for status in ("pending", "running"))


def is_final(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("status") in ("completed", "failed", "cancelled")


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class Recorder:
    """Latencies per request kind; failures are counted, not raised, so an error under load is
    a number in the table rather than a lost run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def call(self, kind: str, request: Callable[[], T]) -> T | None:
        start = time.perf_counter()
        try:
            value = request()
        except (httpx.HTTPError, ApiFailure, ValueError, KeyError) as exc:
            self.errors += 1
            if len(self.first_errors) < KEEP_ERRORS:
                self.first_errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        self.latencies.setdefault(kind, []).append(time.perf_counter() - start)
        return value

    def merge(self, other: "Recorder") -> None:
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.errors += other.errors
        room = KEEP_ERRORS - len(self.first_errors)
        self.first_errors.extend(other.first_errors[: max(0, room)])

    @property
    def requests(self) -> int:
        return self.errors + sum(len(values) for values in self.latencies.values())

    def all_latencies(self, leave_out: Sequence[str] = ()) -> list[float]:
        return [v for kind, vs in self.latencies.items() if kind not in leave_out for v in vs]

    def p50_ms(self, kind: str) -> float:
        return self._percentile_ms(kind, 50)

    def p99_ms(self, kind: str) -> float:
        return self._percentile_ms(kind, 99)

    def _percentile_ms(self, kind: str, pct: int) -> float:
        """NaN when no request of that kind succeeded (NaN fails every comparison)."""
        values = self.latencies.get(kind)
        return 1000 * percentile(values, pct) if values else float("nan")


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run target(0..count-1) in threads released together; re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@dataclass
class MixedResult:
    recorder: Recorder
    wall_s: float
    waits_final: int  # long-polls that returned a finished task (the rest hit their timeout)


def run_mixed(
    socket: Path, clients: int, requests: int, wait_timeout_s: float = 1.0, seed: int = 1
) -> MixedResult:
    """`clients` threads, each with its own connection, send `requests` requests each, cycling
    through submit (noop), status of one of its own tasks, list (limit 50) and a long-poll wait
    on the task it submitted last; as fast as answers come, so the daemon sees real overlap."""
    recorders = [Recorder() for _ in range(clients)]
    finals = [0] * clients

    def client(index: int) -> None:
        rec, rng, ids = recorders[index], random.Random(seed * 1000 + index), []
        with Api(socket) as api:
            for n in range(requests):
                kind = KINDS[n % len(KINDS)]
                if kind == "submit":
                    task_id = rec.call(kind, api.submit)
                    if task_id is not None:
                        ids.append(task_id)
                elif not ids:  # the first submit failed: nothing of its own to ask about
                    rec.call("list", api.list)
                elif kind == "status":
                    rec.call(kind, lambda: api.status(rng.choice(ids)))
                elif kind == "list":
                    rec.call(kind, api.list)
                else:
                    finals[index] += is_final(
                        rec.call(kind, lambda: api.wait(ids[-1], wait_timeout_s))
                    )

    start = time.monotonic()
    run_threads(clients, client)
    wall = time.monotonic() - start
    total = Recorder()
    for rec in recorders:
        total.merge(rec)
    return MixedResult(total, wall, sum(finals))


def sample_latencies(
    api: Api, ids: Sequence[str], rounds: int, rng: random.Random, recorder: Recorder
) -> list[str]:
    """`rounds` sequential rounds of submit, status (a random known task), list (limit 50) and
    list of completed tasks (limit 50), into `recorder`; returns the ids it submitted."""
    submitted: list[str] = []
    for _ in range(rounds):
        task_id = recorder.call("submit", api.submit)
        if task_id is not None:
            submitted.append(task_id)
        recorder.call("status", lambda: api.status(rng.choice(ids)))
        recorder.call("list", api.list)
        recorder.call("list completed", lambda: api.list(50, "completed"))
    return submitted


def grow(api: Api, count: int) -> list[str]:
    """Submit `count` noop tasks in batches of the largest size the API takes."""
    ids: list[str] = []
    while len(ids) < count:
        ids.extend(api.submit_batch(min(MAX_BATCH, count - len(ids))))
    return ids


def soak_wave(socket: Path, tasks: int, clients: int) -> Recorder:
    """Submit `tasks` noop tasks one request each from `clients` threads, and have each thread
    long-poll every task it submitted until it is final (a task not final is an error)."""
    recorders = [Recorder() for _ in range(clients)]
    per_client = [tasks // clients + (1 if i < tasks % clients else 0) for i in range(clients)]

    def client(index: int) -> None:
        rec, ids = recorders[index], []
        with Api(socket) as api:
            for _ in range(per_client[index]):
                task_id = rec.call("submit", api.submit)
                if task_id is not None:
                    ids.append(task_id)
            for task_id in ids:
                record = rec.call("wait", lambda: api.wait(task_id, 60.0))
                if record is not None and record.get("status") != "completed":
                    rec.errors += 1
                    rec.first_errors.append(f"wait: task {task_id} is {record.get('status')}")

    run_threads(clients, client)
    total = Recorder()
    for rec in recorders:
        total.merge(rec)
    return total


def deadline_poll(predicate: Callable[[], bool], timeout_s: float, pause_s: float = 0.05) -> bool:
    """Poll `predicate` until true (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(pause_s)
    return True


# ---------------------------------------------------------------------------------------------
# a daemon for the bench scripts (tests use conftest's make_daemon)


class BenchDaemon:
    """A `python -m pi_render serve` subprocess on a temp data dir and a short /tmp socket,
    with pi_render's default settings otherwise; removed again by `stop`."""

    def __init__(self, extra_config: str = "", keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pi-render-load-"))
        self.socket_dir = Path(tempfile.mkdtemp(prefix="prl-", dir="/tmp"))  # AF_UNIX: short
        self.socket = self.socket_dir / "api.sock"
        self.log_path = self.root / "daemon.log"
        self.keep = keep
        config = self.root / "config.toml"
        config.write_text(
            f'data_dir = "{self.root / "data"}"\nsocket = "{self.socket}"\n'
            f"shutdown_grace_s = 5\n{extra_config}"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PI_RENDER_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pi_render", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        if not deadline_poll(self._answers, 60.0):
            self.stop()
            raise RuntimeError(f"the daemon did not answer on {self.socket}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with Api(self.socket, timeout=5) as api:
                api.health()
        except (httpx.HTTPError, ApiFailure):
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (kill if it will not go), then remove its files unless asked to keep them."""
        stop_process(self.proc)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self.keep:
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# output


def stop_process(proc: "subprocess.Popen[bytes]") -> None:
    """SIGTERM, then wait; kill it if it will not go."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def print_run_header(daemon: str) -> None:
    """The command and the host, so a pasted table says how it was made."""
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(
        f"host: {len(os.sched_getaffinity(0))} CPUs, {platform.system()} {platform.release()}, "
        f"python {platform.python_version()}; daemon: {daemon}"
    )
    print(flush=True)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table: first column left-aligned, the rest right-aligned."""
    cells = [list(header)] + [list(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for n, line in enumerate(cells):
        print(
            " | ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths))
            ).rstrip()
        )
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def fmt(value: float) -> str:
    """A number to a useful precision (3 significant digits or the whole part)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
