"""Throughput and latency: pi_render (end to end, durable, through its socket API) against raw
persist-queue and huey (SqliteHuey with a real consumer), on this host, in one run.

    .venv/bin/python bench/throughput.py                 # the full size: 20000 tasks per system
    .venv/bin/python bench/throughput.py --tasks 2000    # a quick run

Phases, in order:
  1. pi_render throughput: a `pi_render serve` subprocess (temp data dir, [workers] default = W);
     N `noop` tasks submitted from C client threads, each with its own Client, one
     `POST /tasks` per task, as fast as they go, so a backlog builds; records are read back
     through the list API.
  2. pi_render (batch) throughput: the same with a fresh daemon, but each client submits its
     share through `Client.submit_many` (`POST /tasks/batch`), B tasks per request.
  3. pi_render latency: a fresh, idle daemon; one client submits a task and waits for it, L
     times in a row; latency = record.started_at - wall time just before the submit request.
  4. persist-queue: SQLiteAckQueue as pi_render opens it (WAL, synchronous=NORMAL, json);
     put N, then get+ack N with W threads.
  5. huey throughput: SqliteHuey in a temp file, a real consumer subprocess (thread workers,
     W of them, all other consumer settings at huey's defaults); N tasks enqueued from C threads.
  6. huey latency: the same consumer once idle; one thread enqueues a task and waits for its
     result, L times in a row; latency = time.time() inside the task - time before enqueue.

No figure is asserted: this is a measurement, not a test. Everything it starts is stopped and
every temp dir removed at the end, on error too.
"""

import argparse
import importlib.metadata
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json
from huey import SqliteHuey
from huey.consumer import Consumer
from loadgen import percentile, proc_cpu_s, run_threads, stop_process

import pi_render
from pi_render.api.client import Client
from pi_render.errors import DaemonUnreachable
from pi_render.queue.sqlite import NormalSyncAckQueue
from pi_render.task.record import TaskRecord, TaskStatus

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
LIST_PAGE = 1000  # the API's largest page
HUEY_NAME = "bench"
HUEY_TASK = "bench_noop"
HUEY_RESULT_POLL_S = 0.005  # how often we look for a huey result (our waiting, not huey's)
WARMUP = 5  # untimed requests before each latency series (connections, imports, caches)
MAX_BATCH = 1000  # the most tasks POST /tasks/batch takes
PI = "pi_render"
PI_BATCH = "pi_render (batch)"
PI_PG = "pi_render (PostgreSQL)"


# ---------------------------------------------------------------------------------------------
# small helpers


def window_rate(stamps: Sequence[float], fraction: float, last: bool) -> float:
    """Completions per second over the first (or last) `fraction` of sorted completion times."""
    ordered = sorted(stamps)
    k = max(2, int(len(ordered) * fraction))
    window = ordered[-k:] if last else ordered[:k]
    span = window[-1] - window[0]
    return (k - 1) / span if span > 0 else float("inf")


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> str:
    """The mount point and filesystem type holding `path` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        inside = target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")
        if inside and len(parts[1]) >= len(best):
            best, kind = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return kind


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def git(*command: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_state() -> str:
    """Which pi_render is measured: the daemon runs `-m pi_render` from REPO."""
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return f"{REPO / 'pi_render'} (not a git checkout)"
    changed = git("status", "--porcelain", "--", "pi_render") or ""
    count = len(changed.splitlines())
    state = f"{count} uncommitted change(s) under pi_render/" if count else "clean"
    return f"{REPO / 'pi_render'} (git {head}, {state})"


def shares(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal counts."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Row:
    system: str
    metric: str
    value: float
    unit: str
    huey: float | None = None  # huey's figure for the same metric, for the ratio column

    def ratio(self) -> str:
        if self.huey is None or self.huey == 0:
            return "-"
        return f"{self.value / self.huey:.2f}x"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, system: str, metric: str, value: float, unit: str) -> None:
        self.rows.append(Row(system, metric, value, unit))

    def get(self, system: str, metric: str) -> float:
        for row in self.rows:
            if row.system == system and row.metric == metric:
                return row.value
        raise KeyError((system, metric))


def add_rate_rows(
    report: Report,
    system: str,
    n: int,
    t_first: float,
    t_submitted: float,
    done: Sequence[float],
    submit_unit: str = "req/s",
) -> None:
    """The throughput rows shared by pi_render and huey, from wall-clock completion stamps.

    The submit rate counts tasks; its unit says "req/s" where each task is one request."""
    t_last = max(done)
    drain = [stamp for stamp in done if stamp > t_submitted]
    report.add(system, "end-to-end rate", n / (t_last - t_first), "tasks/s")
    report.add(system, "submit/enqueue rate", n / (t_submitted - t_first), submit_unit)
    report.add(system, "rate, first 10% done", window_rate(done, 0.1, False), "tasks/s")
    report.add(system, "rate, last 10% done", window_rate(done, 0.1, True), "tasks/s")
    report.add(system, "backlog when submits ended", len(drain), "tasks")
    if len(drain) >= 20:
        span = t_last - t_submitted
        report.add(system, "drain rate after submits ended", len(drain) / span, "tasks/s")
        report.add(
            system, "drain rate, first 10% of drain", window_rate(drain, 0.1, False), "tasks/s"
        )
        report.add(
            system, "drain rate, last 10% of drain", window_rate(drain, 0.1, True), "tasks/s"
        )
    report.add(system, "total wall time", t_last - t_first, "s")


def fmt(value: float) -> str:
    if value == float("inf"):
        return "inf"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# ---------------------------------------------------------------------------------------------
# pi_render


class DaemonProcess:
    """A `python -m pi_render serve` subprocess on a temp data dir and a short /tmp socket."""

    def __init__(self, root: Path, socket_dir: Path, workers: int, log_level: str,
                 extra: str = "") -> None:  # fmt: skip
        self.data_dir = root / "data"
        self.socket = socket_dir / "api.sock"
        self.config_path = root / "config.toml"
        self.log_path = root / "daemon.log"
        self.config_path.write_text(
            f'data_dir = "{self.data_dir}"\n'
            f'socket = "{self.socket}"\n'
            f'log_level = "{log_level}"\n'
            "shutdown_grace_s = 5\n"
            "\n[workers]\n"
            f"default = {workers}\n{extra}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        for name in ("PI_RENDER_CONFIG", "PI_RENDER_SOCKET", "PI_RENDER_DATA_DIR"):
            env.pop(name, None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pi_render", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        with Client(self.socket, timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    client.health()
                    return
                except DaemonUnreachable:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"daemon did not answer on {self.socket}") from None
                    time.sleep(0.05)

    def client(self, timeout: float = 120.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def cpu_s(self) -> float:
        assert self.proc is not None
        return proc_cpu_s(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then wait (kill if it will not go)."""
        if self.proc is not None:
            stop_process(self.proc)


def fetch_all(client: Client, expected: int) -> list[TaskRecord]:
    records: list[TaskRecord] = []
    while True:
        page = client.list(limit=LIST_PAGE, offset=len(records))
        records.extend(page)
        if len(page) < LIST_PAGE:
            break
    if len(records) != expected:
        raise RuntimeError(f"expected {expected} records, the list API returned {len(records)}")
    return records


def temp_dir(prefix: str, parent: Path, stack: ExitStack, keep: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if not keep:
        stack.callback(shutil.rmtree, path, True)
    return path


def bench_pi_render_throughput(
    args: argparse.Namespace,
    tmp: Path,
    sock_root: Path,
    stack: ExitStack,
    report: Report,
    batch: int | None = None,
    farm: str | None = None,
) -> None:
    """N noop tasks from C clients: one POST /tasks each, or (batch=B) B per POST /tasks/batch;
    with `farm` (a database URI), on the PostgreSQL backend (one farm host)."""
    system = PI if batch is None else PI_BATCH
    extra = ""
    if farm is not None:
        system = PI_PG
        shared = temp_dir("tpg-shared-", tmp, stack, args.keep)
        extra = f'[farm]\ndatabase = "{farm}"\nshared_dir = "{shared}"\nhost_name = "bench"\n'
    root = temp_dir("tp-" if batch is None else "tpb-", tmp, stack, args.keep)
    sock_dir = Path(tempfile.mkdtemp(prefix="t" if batch is None else "b", dir=sock_root))
    daemon = DaemonProcess(root, sock_dir, args.workers, args.log_level, extra)
    stack.callback(daemon.stop)
    daemon.start()

    counts = shares(args.tasks, args.clients)
    first_start = [0.0] * args.clients
    last_end = [0.0] * args.clients
    last_ids: list[str] = [""] * args.clients
    requests = [0] * args.clients

    def submitter(index: int) -> None:
        with daemon.client() as client:
            first_start[index] = time.time()
            record_id = ""
            if batch is None:
                for _ in range(counts[index]):
                    record_id = client.submit("noop").id
                    requests[index] += 1
            else:
                left = counts[index]
                while left > 0:
                    size = min(batch, left)
                    records = client.submit_many([{"type": "noop"}] * size)
                    if len(records) != size:
                        raise RuntimeError(f"asked for {size} tasks, got {len(records)} back")
                    record_id = records[-1].id
                    left -= size
                    requests[index] += 1
            last_end[index] = time.time()
            last_ids[index] = record_id

    how = "one request each" if batch is None else f"in batches of {batch}"
    print(
        f"[{system}] submitting {args.tasks} noop tasks from {args.clients} clients, {how}...",
        flush=True,
    )
    daemon_cpu0, own_cpu0, wall0 = daemon.cpu_s(), own_cpu_s(), time.monotonic()
    run_threads(args.clients, submitter)
    t_first = min(first_start)
    t_submitted = max(last_end)

    with daemon.client(timeout=600) as client:
        for record_id in last_ids:
            if record_id:
                client.wait(record_id, timeout=3600)
        while True:  # the last submitted ids are done; wait for any stragglers
            counts_by_status = client.health()["records"]
            if counts_by_status["pending"] == 0 and counts_by_status["running"] == 0:
                break
            time.sleep(0.1)
        wall = time.monotonic() - wall0
        daemon_cpu, own_cpu = daemon.cpu_s() - daemon_cpu0, own_cpu_s() - own_cpu0
        print(f"[{system}] all done; reading records back...", flush=True)
        records = fetch_all(client, args.tasks)
    daemon.stop()

    bad = [r for r in records if r.status is not TaskStatus.COMPLETED or r.finished_at is None]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not complete, e.g. {bad[0]!r}")
    finished = [r.finished_at.timestamp() for r in records if r.finished_at is not None]
    add_rate_rows(
        report,
        system,
        args.tasks,
        t_first,
        t_submitted,
        finished,
        "req/s" if batch is None else "tasks/s",
    )
    report.notes.append(
        f"{system} throughput phase: {sum(requests)} submit requests; daemon CPU "
        f"{daemon_cpu:.1f} s, bench process (clients) CPU {own_cpu:.1f} s over {wall:.1f} s "
        f"wall ({os.cpu_count()} CPUs)"
    )


def bench_pi_render_latency(
    args: argparse.Namespace, tmp: Path, sock_root: Path, stack: ExitStack, report: Report
) -> None:
    root = temp_dir("lat-", tmp, stack, args.keep)
    sock_dir = Path(tempfile.mkdtemp(prefix="l", dir=sock_root))
    daemon = DaemonProcess(root, sock_dir, args.workers, args.log_level)
    stack.callback(daemon.stop)
    daemon.start()
    print(
        f"[pi_render] latency: {args.latency_samples} sequential submits on an idle daemon...",
        flush=True,
    )
    to_start: list[float] = []
    round_trip: list[float] = []
    with daemon.client() as client:
        for i in range(WARMUP + args.latency_samples):
            before = time.time()
            submitted = client.submit("noop")
            after = time.time()
            record = client.wait(submitted.id, timeout=60)
            if record.status is not TaskStatus.COMPLETED or record.started_at is None:
                raise RuntimeError(f"latency task did not complete: {record!r}")
            if i >= WARMUP:
                to_start.append(record.started_at.timestamp() - before)
                round_trip.append(after - before)
    daemon.stop()
    report.add("pi_render", "submit->start latency p50", 1000 * percentile(to_start, 50), "ms")
    report.add("pi_render", "submit->start latency p99", 1000 * percentile(to_start, 99), "ms")
    report.add(
        "pi_render", "submit request round trip p50", 1000 * percentile(round_trip, 50), "ms"
    )


# ---------------------------------------------------------------------------------------------
# persist-queue


def bench_persist_queue(
    args: argparse.Namespace, tmp: Path, stack: ExitStack, report: Report
) -> None:
    root = temp_dir("pq-", tmp, stack, args.keep)
    queue: Any = NormalSyncAckQueue(
        str(root),
        name="normal",
        db_file_name="default.sqlite",
        multithreading=True,
        auto_resume=True,
        serializer=persistqueue.serializers.json,
    )
    stack.callback(queue.close)
    print(
        f"[persist-queue] put {args.tasks}, then get+ack with {args.workers} threads...", flush=True
    )
    t0 = time.monotonic()
    for i in range(args.tasks):
        queue.put({"id": f"{i:020d}"})
    t_put = time.monotonic()
    acked = [0] * args.workers

    def consumer(index: int) -> None:
        while True:
            try:
                row = queue.get(block=False, raw=True)
            except persistqueue.Empty:
                return
            queue.ack(id=row["pqid"])
            acked[index] += 1

    run_threads(args.workers, consumer)
    t_done = time.monotonic()
    if sum(acked) != args.tasks:
        raise RuntimeError(f"persist-queue: acked {sum(acked)} of {args.tasks}")
    report.add("persist-queue", "put rate", args.tasks / (t_put - t0), "items/s")
    report.add("persist-queue", "get+ack rate", args.tasks / (t_done - t_put), "items/s")
    report.add(
        "persist-queue", "overall (put, then get+ack)", args.tasks / (t_done - t0), "items/s"
    )


# ---------------------------------------------------------------------------------------------
# huey


def huey_noop() -> float:
    """The huey task: returns when it ran (wall time), so start and end are one stamp."""
    return time.time()


def make_huey(db_path: Path) -> tuple[Any, Any]:
    """The SqliteHuey instance and its noop task, identical in the bench and consumer process."""
    huey = SqliteHuey(HUEY_NAME, filename=str(db_path))
    task = huey.task(name=HUEY_TASK)(huey_noop)
    return huey, task


def run_huey_consumer(db_path: Path, workers: int) -> int:
    """The consumer subprocess: huey's Consumer with thread workers and its default polling."""
    huey, _ = make_huey(db_path)
    Consumer(huey, workers=workers, worker_type="thread").run()
    return 0


class HueyConsumerProcess:
    def __init__(self, db_path: Path, workers: int, log_path: Path) -> None:
        self.db_path = db_path
        self.workers = workers
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--huey-consumer",
                    str(self.db_path),
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def cpu_s(self) -> float:
        assert self.proc is not None
        return proc_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # huey's graceful stop
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def wait_result(result: Any, timeout: float = 120.0) -> float:
    value = result.get(blocking=True, timeout=timeout, backoff=1.0, max_delay=HUEY_RESULT_POLL_S)
    return float(value)


def bench_huey(args: argparse.Namespace, tmp: Path, stack: ExitStack, report: Report) -> None:
    root = temp_dir("huey-", tmp, stack, args.keep)
    db_path = root / "huey.db"
    huey, task = make_huey(db_path)
    stack.callback(huey.storage.close)
    consumer = HueyConsumerProcess(db_path, args.workers, root / "consumer.log")
    stack.callback(consumer.stop)
    consumer.start()
    wait_result(task(), START_TIMEOUT_S)  # the consumer is up and running tasks

    counts = shares(args.tasks, args.clients)
    first_start = [0.0] * args.clients
    last_end = [0.0] * args.clients
    handles: list[list[Any]] = [[] for _ in range(args.clients)]

    def enqueuer(index: int) -> None:
        mine = handles[index]
        first_start[index] = time.time()
        for _ in range(counts[index]):
            mine.append(task())
        last_end[index] = time.time()

    print(f"[huey] enqueueing {args.tasks} tasks from {args.clients} threads...", flush=True)
    consumer_cpu0, own_cpu0, wall0 = consumer.cpu_s(), own_cpu_s(), time.monotonic()
    run_threads(args.clients, enqueuer)
    t_first, t_enqueued = min(first_start), max(last_end)
    while huey.storage.result_store_size() < args.tasks:
        time.sleep(0.05)
    wall = time.monotonic() - wall0
    consumer_cpu, own_cpu = consumer.cpu_s() - consumer_cpu0, own_cpu_s() - own_cpu0
    stored = huey.storage.result_items()
    stamps = [float(huey.serializer.deserialize(value)) for value in stored.values()]
    if len(stamps) != args.tasks:
        raise RuntimeError(f"huey: {len(stamps)} results stored, expected {args.tasks}")
    huey.storage.flush_results()
    add_rate_rows(report, "huey", args.tasks, t_first, t_enqueued, stamps)
    report.notes.append(
        f"huey throughput phase: consumer CPU {consumer_cpu:.1f} s, bench process (enqueuers) "
        f"CPU {own_cpu:.1f} s over {wall:.1f} s wall"
    )

    print(
        f"[huey] latency: {args.latency_samples} sequential enqueues on the idle consumer...",
        flush=True,
    )
    to_start: list[float] = []
    for i in range(WARMUP + args.latency_samples):
        before = time.time()
        started = wait_result(task())
        if i >= WARMUP:
            to_start.append(started - before)
    report.add("huey", "submit->start latency p50", 1000 * percentile(to_start, 50), "ms")
    report.add("huey", "submit->start latency p99", 1000 * percentile(to_start, 99), "ms")
    consumer.stop()


# ---------------------------------------------------------------------------------------------
# output


def print_machine(tmp: Path) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print("machine:")
    print(f"  nproc:       {affinity} (os.cpu_count() = {os.cpu_count()})")
    print(f"  cpu:         {cpu_model()}")
    print(f"  kernel:      {platform.system()} {platform.release()}")
    print(f"  python:      {platform.python_implementation()} {platform.python_version()}")
    print(f"  sqlite:      {sqlite3.sqlite_version}")
    print(f"  temp dir fs: {tmp} on {filesystem_of(tmp)}")
    packages = ("persist-queue", "huey", "sqlitedict", "fastapi", "uvicorn", "httpx", "pydantic")
    print("  packages:    " + ", ".join(f"{name} {version_of(name)}" for name in packages))
    print(f"  daemon code: {code_state()}")
    client_code = Path(pi_render.__file__).resolve().parent
    if client_code != REPO / "pi_render":
        print(f"  note: this process imports pi_render from {client_code} (client side only)")


def print_table(report: Report) -> None:
    huey = {row.metric: row.value for row in report.rows if row.system == "huey"}
    for row in report.rows:
        comparable = row.unit in ("tasks/s", "req/s", "ms")
        if row.system in (PI, PI_BATCH, PI_PG) and row.metric in huey and comparable:
            row.huey = huey[row.metric]
        if row.system == "persist-queue" and row.metric == "put rate":
            row.huey = huey.get("submit/enqueue rate")
        if row.system == "persist-queue" and row.metric.startswith("overall"):
            row.huey = huey.get("end-to-end rate")
    header = ("system", "metric", "value", "unit", "vs huey (x / huey)")
    cells = [header] + [
        (row.system, row.metric, fmt(row.value), row.unit, row.ratio()) for row in report.rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    rule = "+".join("-" * (w + 2) for w in widths)
    for n, line in enumerate(cells):
        print(
            " | ".join(
                cell.rjust(w) if i in (2, 4) else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths))
            ).rstrip()
        )
        if n == 0:
            print(rule)


def print_goals(report: Report) -> None:
    huey_e2e = report.get("huey", "end-to-end rate")
    lines: list[tuple[str, str]] = []
    for system in (PI, PI_BATCH):
        e2e = report.get(system, "end-to-end rate") / huey_e2e
        lines.append(
            (f"{system} end-to-end >= huey's:", f"{e2e:.2f}x  ({'met' if e2e >= 1 else 'not met'})")
        )
    for system in (PI, PI_BATCH):
        flat = report.get(system, "rate, last 10% done") / report.get(
            system, "rate, first 10% done"
        )
        lines.append(
            (f"{system} rate flat as backlog grows:", f"last 10% / first 10% done = {flat:.2f}")
        )
        try:
            drain = report.get(system, "drain rate, last 10% of drain") / report.get(
                system, "drain rate, first 10% of drain"
            )
        except KeyError:
            pass
        else:
            lines.append(
                ("", f"(no submits competing: last 10% / first 10% of the drain = " f"{drain:.2f})")
            )
    p50 = report.get(PI, "submit->start latency p50")
    lines.append(
        (
            "pi_render p50 submit->start <= 5 ms:",
            f"{p50:.2f} ms  ({'met' if p50 <= 5 else 'not met'})",
        )
    )
    width = max(len(label) for label, _ in lines)
    print("goals:")
    for label, text in lines:
        print(f"  {label:<{width}}  {text}" if label else f"    {text}")


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per system (20000)")
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent submitting threads, one client each (8)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="pi_render [workers] default; huey consumer workers; "
        "persist-queue consumer threads (2)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help=f"tasks per POST /tasks/batch in the batch phase (100; " f"at most {MAX_BATCH})",
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=500,
        help="sequential submits for the latency phases (500)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the pi_render daemon's log_level (INFO, its default)",
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the data dirs go (the system temp dir)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("pi_render", "pi_render-batch", "persist-queue", "huey"),
        help="leave a system out (repeatable; pi_render leaves out its "
        "single-submit and latency phases, pi_render-batch its batch phase)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp data dirs (and daemon logs) for a post-mortem",
    )
    parser.add_argument(
        "--farm-database",
        help="also measure pi_render on the PostgreSQL backend (farm mode, one host) with this "
        "libpq URI (bench/farm.py starts a server and passes it)",
    )
    parser.add_argument("--huey-consumer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tasks < 20 or args.clients < 1 or args.workers < 1 or args.latency_samples < 2:
        parser.error("need --tasks >= 20, --clients >= 1, --workers >= 1, --latency-samples >= 2")
    if not 1 <= args.batch_size <= MAX_BATCH:
        parser.error(f"need 1 <= --batch-size <= {MAX_BATCH}")
    return args


def stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM (and SIGINT, even where a shell started us ignoring it) unwinds the cleanup."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.huey_consumer is not None:
        return run_huey_consumer(args.huey_consumer, args.workers)
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)

    print(f"command: {shlex.join(sys.orig_argv)}")
    print_machine(args.tmp_dir)
    print(
        f"settings: tasks={args.tasks} clients={args.clients} workers={args.workers} "
        f"batch_size={args.batch_size} latency_samples={args.latency_samples} "
        f"(+{WARMUP} untimed warm-up each) pi_render log_level={args.log_level}"
    )
    print(
        "huey consumer: workers=%d, worker_type=thread, initial delay (-d) 0.1 s, backoff "
        "1.15, max delay 10 s (huey's defaults); results polled every %g s by the bench"
        % (args.workers, HUEY_RESULT_POLL_S)
    )
    print(flush=True)

    report = Report()
    started = time.monotonic()
    with ExitStack() as stack:
        tmp = temp_dir("pi-render-bench-", args.tmp_dir, stack, args.keep)
        if args.keep:
            print(f"keeping data dirs under {tmp}")
        sock_root = Path(tempfile.mkdtemp(prefix="prb-", dir="/tmp"))  # AF_UNIX: keep it short
        stack.callback(shutil.rmtree, sock_root, True)
        if "pi_render" not in args.skip:
            bench_pi_render_throughput(args, tmp, sock_root, stack, report)
        if "pi_render-batch" not in args.skip:
            bench_pi_render_throughput(args, tmp, sock_root, stack, report, args.batch_size)
        if args.farm_database:
            bench_pi_render_throughput(args, tmp, sock_root, stack, report,
                                       farm=args.farm_database)  # fmt: skip
        if "pi_render" not in args.skip:
            bench_pi_render_latency(args, tmp, sock_root, stack, report)
        if "persist-queue" not in args.skip:
            bench_persist_queue(args, tmp, stack, report)
        if "huey" not in args.skip:
            bench_huey(args, tmp, stack, report)

    print()
    print_table(report)
    print()
    for note in report.notes:
        print(note)
    if not args.skip:
        print_goals(report)
    print(f"total benchmark time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
