"""Farm mode on this machine: 1, 2 and 3 local hosts (daemons with their own data dirs, one
PostgreSQL server started here as an unprivileged user, one shared folder) render a 120-frame
job in chunks of 4 with a fake Blender that sleeps 0.5 s a frame; then what a chunk costs to
claim, how long a killed host's chunk takes to restart elsewhere, how fast a submit reaches a
worker on another host, and durable `noop` throughput on PostgreSQL beside SQLite and huey.

    .venv/bin/python bench/farm.py                   # the full run (~5 minutes)
    .venv/bin/python bench/farm.py --tasks 500       # a shorter throughput phase

No figure is asserted: this is a measurement, not a test.
"""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from loadgen import percentile  # noqa: E402
from pg_cluster import PostgresCluster, postgres_bin  # noqa: E402

from pi_render.api.client import Client  # noqa: E402
from pi_render.errors import DaemonUnreachable  # noqa: E402
from pi_render.task.record import TaskRecord  # noqa: E402

FAKE = REPO / "tests" / "fakes" / "fake_blender.py"


class Host:
    """One farm daemon: `python -m pi_render serve` with a [farm] config."""

    def __init__(self, root: Path, name: str, database: str, shared: Path, lease_s: float,
                 workers: str, sleep: float) -> None:  # fmt: skip
        self.root, self.name = root / name, name
        self.root.mkdir()
        self.socket = Path(tempfile.mkdtemp(prefix="fb-", dir="/tmp")) / "api.sock"
        config = self.root / "config.toml"
        config.write_text(
            f'data_dir = "{self.root / "data"}"\nsocket = "{self.socket}"\n'
            f'blender = "{FAKE}"\nblender_env_keep = ["PATH", "FAKE_BLENDER", '
            f'"FAKE_BLENDER_SLEEP"]\nlog_level = "WARNING"\nheartbeat_s = 1\n'
            f"[workers]\n{workers}\n[farm]\n"
            f'database = "{database}"\nshared_dir = "{shared}"\nhost_name = "{name}"\n'
            f"lease_s = {lease_s}\nhost_timeout_s = {lease_s}\n")  # fmt: skip
        env = {**os.environ, "FAKE_BLENDER": "render", "FAKE_BLENDER_SLEEP": str(sleep)}
        with open(self.root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pi_render", "serve", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)  # fmt: skip
        self.client = Client(self.socket, timeout=600)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.health()
                return
            except DaemonUnreachable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"host {name} did not start") from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(60)
        self.client.close()
        shutil.rmtree(self.socket.parent, ignore_errors=True)


def stamp(when: datetime | None) -> float:
    assert when is not None
    return when.timestamp()


def chunk_gaps(chunks: list[TaskRecord]) -> list[float]:
    """Per worker, the time between one chunk's end and its next chunk's start (ms)."""
    gaps: list[float] = []
    by_worker: dict[str, list[TaskRecord]] = {}
    for chunk in chunks:
        by_worker.setdefault(chunk.worker or "?", []).append(chunk)
    for mine in by_worker.values():
        mine.sort(key=lambda c: stamp(c.started_at))
        for before, after in zip(mine, mine[1:]):
            gaps.append(1000 * (stamp(after.started_at) - stamp(before.finished_at)))
    return gaps


class Farm:
    def __init__(self, cluster: PostgresCluster, tmp: Path, stack: ExitStack) -> None:
        self.cluster, self.tmp, self.stack = cluster, tmp, stack

    def hosts(self, count: int, lease_s: float, sleep: float,
              workers: list[str] | None = None) -> list[Host]:  # fmt: skip
        database = self.cluster.new_database()
        root = Path(tempfile.mkdtemp(prefix="farm-", dir=self.tmp))
        shared = root / "shared"
        shared.mkdir()
        made = []
        for index in range(count):
            spec = (workers or [])[index] if workers else "default = 1\nrender = 1"
            host = Host(root, f"h{index + 1}", database, shared, lease_s, spec, sleep)
            self.stack.callback(host.stop)
            made.append(host)
        return made


def speedup(farm: Farm, scene: Path, sleep: float, frames: int, chunk: int) -> list[str]:
    rows, base = [], 0.0
    gaps: list[float] = []
    for count in (1, 2, 3):
        hosts = farm.hosts(count, 30.0, sleep)
        started = time.monotonic()
        job = hosts[0].client.render({"source": str(scene), "start_frame": 1,
                                      "end_frame": frames, "chunk_size": chunk})  # fmt: skip
        done = hosts[0].client.wait(job.id, timeout=3600)
        wall = time.monotonic() - started
        assert done.status == "completed", done.error
        gaps += chunk_gaps(hosts[0].client.chunks(job.id))
        base = base or wall
        rows.append(f"| {count} | {wall:.1f} s | {base / wall:.2f}x | {0.9 * count:.1f}x |")
        for host in hosts:
            host.stop()
    rows.append("")
    rows.append(f"claim overhead per chunk (a worker's end of one chunk → start of its next): "
                f"p50 {percentile(gaps, 50):.1f} ms, p99 {percentile(gaps, 99):.1f} ms "
                f"over {len(gaps)} chunk starts")  # fmt: skip
    return rows


def restart_after_kill(farm: Farm, scene: Path, lease_s: float) -> str:
    hosts = farm.hosts(2, lease_s, 0.5)
    job = hosts[0].client.render({"source": str(scene), "start_frame": 1, "end_frame": 40,
                                  "chunk_size": 4})  # fmt: skip
    victim = None
    while victim is None:
        for chunk in hosts[0].client.chunks(job.id):
            if chunk.status == "running" and (chunk.worker or "").startswith("h2/"):
                victim = chunk
        time.sleep(0.05)
    killed = time.time()
    hosts[1].stop(kill=True)
    while True:
        again = hosts[0].client.get(victim.id)
        if again.attempts >= 2 and again.started_at is not None:
            break
        time.sleep(0.05)
    restart = stamp(again.started_at) - killed
    hosts[0].client.wait(job.id, timeout=600)
    hosts[0].stop()
    return (
        f"killed host's chunk restarted elsewhere after {restart:.1f} s "
        f"(lease_s = host_timeout_s = {lease_s:g}; goal ≤ {2 * lease_s:g} s)"
    )


def remote_start_latency(farm: Farm, samples: int) -> str:
    hosts = farm.hosts(2, 30.0, 0.0, ["default = 0\nrender = 0", "default = 1\nrender = 0"])
    latencies = []
    for _ in range(samples + 5):
        before = time.time()
        record = hosts[0].client.submit("noop", {})  # h1 has no workers: h2 runs it
        done = hosts[0].client.wait(record.id, timeout=60)
        latencies.append(1000 * (stamp(done.started_at) - before))
    latencies = latencies[5:]  # warm-up
    for host in hosts:
        host.stop()
    return (
        f"submit on h1 → worker on h2 starting: p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms over {samples} sequential submits "
        "(goal p50 ≤ 50 ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.5, help="fake Blender's s per frame")
    parser.add_argument("--lease", type=float, default=5.0, help="lease for the kill phase")
    parser.add_argument("--samples", type=int, default=200, help="remote-start latency samples")
    parser.add_argument("--tasks", type=int, default=2000, help="noop tasks per system")
    args = parser.parse_args()
    bin_dir = postgres_bin()
    if bin_dir is None:
        print("PostgreSQL is not installed (apt install postgresql)")
        return 1
    print(f"command: {shlex.join(sys.orig_argv)}")
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-farm-"))
        stack.callback(shutil.rmtree, tmp, True)
        cluster = PostgresCluster(bin_dir)
        stack.callback(cluster.close)
        cluster.start()
        scene = tmp / "scene.blend"
        subprocess.run([sys.executable, "-m", "pi_render", "sample", str(scene), "--frames",
                        str(args.frames), "--size", "8"], check=True, cwd=REPO)  # fmt: skip
        farm = Farm(cluster, tmp, stack)
        print(
            f"\n{args.frames} frames, chunks of {args.chunk_size}, fake Blender "
            f"{args.sleep:g} s/frame, one render worker per host:\n"
        )
        print("| hosts | wall time | speed-up vs 1 host | goal |\n|---|---|---|---|")
        for row in speedup(farm, scene, args.sleep, args.frames, args.chunk_size):
            print(row)
        print(restart_after_kill(farm, scene, args.lease))
        print(remote_start_latency(farm, args.samples))
        print("\ndurable noop throughput, SQLite and PostgreSQL backends beside huey:",
              flush=True)  # fmt: skip
        subprocess.run([sys.executable, str(REPO / "bench" / "throughput.py"), "--tasks",
                        str(args.tasks), "--skip", "persist-queue", "--skip", "pi_render-batch",
                        "--latency-samples", "100",
                        "--farm-database", cluster.new_database()], check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
