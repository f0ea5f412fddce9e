"""What GPU discovery costs and what its cache saves: each Blender asked through its own Python
(cold) against the cached answer (warm), and a daemon's start to ready (its socket answers) and
to discovery done, with an empty cache and a warm one, alternating, in one run. Prints a table.

    .venv/bin/python bench/gpu_discovery.py [--runs 5] [--bpy /path/to/venv/bin/python]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pi_render.api.client import Client
from pi_render.errors import DaemonUnreachable
from pi_render.processor.blender import BlenderInstall, find_blenders
from pi_render.processor.gpu import GpuDiscovery, probe
from pi_render.processor.sandbox import find_sandbox

KEEP = ["PATH", "LANG"]


def ask_once(install: BlenderInstall, cache: Path) -> float:
    """Seconds until discovery of `install` is done, with whatever `cache` holds."""
    sandbox = find_sandbox("auto", "nobody")
    discovery = GpuDiscovery([install], cache, lambda b: probe(b, sandbox, KEEP))
    start = time.perf_counter()
    discovery.start()
    discovery.wait(300)
    return time.perf_counter() - start


def daemon_start(work: Path, cache: Path) -> tuple[float, float]:
    """(seconds to ready, seconds to discovery done) of a fresh daemon."""
    sock = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp")) / "api.sock"
    data = Path(tempfile.mkdtemp(dir=work))
    config = work / "config.toml"
    config.write_text(f'data_dir = "{data}"\nsocket = "{sock}"\nlog_level = "WARNING"\n')
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    start = time.perf_counter()
    daemon = subprocess.Popen([sys.executable, "-m", "pi_render", "serve", "--config",
                               str(config)], env=env)  # fmt: skip
    try:
        with Client(sock) as client:
            ready = None
            while True:
                try:
                    health = client.health()
                except DaemonUnreachable:
                    time.sleep(0.01)
                    continue
                ready = ready or time.perf_counter() - start
                if (health.get("gpus") or {}).get("state") == "done":
                    return ready, time.perf_counter() - start
                time.sleep(0.01)
    finally:
        daemon.terminate()
        daemon.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bpy", help="a python with the bpy module, asked too")
    args = parser.parse_args()
    installs = find_blenders(None, [args.bpy] if args.bpy else [])
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    rows: list[tuple[str, list[float], list[float]]] = []
    for install in installs:
        cold, warm = [], []
        for run in range(args.runs):
            cache = work / f"cache-{install.kind}-{run}"
            cold.append(ask_once(install, cache))  # empty: Blender is asked
            warm.append(ask_once(install, cache))  # the same cache: read back
        rows.append((f"discovery, {install.kind} {install.version}", cold, warm))
    ready_cold, ready_warm, done_cold, done_warm = [], [], [], []
    for run in range(args.runs):
        cache = work / f"daemon-cache-{run}"
        ready, done = daemon_start(work, cache)
        ready_cold.append(ready)
        done_cold.append(done)
        ready, done = daemon_start(work, cache)
        ready_warm.append(ready)
        done_warm.append(done)
    rows.append(("daemon start → ready", ready_cold, ready_warm))
    rows.append(("daemon start → discovery done", done_cold, done_warm))
    print(f"{'what':<36} {'cold (s)':>10} {'warm (s)':>10} {'cold/warm':>10}")
    for name, cold, warm in rows:
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"{name:<36} {c:>10.3f} {w:>10.3f} {c / w:>9.1f}×")
    print(f"(medians of {args.runs} runs; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
