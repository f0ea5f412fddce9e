"""The dashboard's speed: the tasks page with 10,000 records, a task page with 250 frames, and
the web process's CPU while no browser is connected. A real daemon (fake Blender for the
250-frame render) and a real `pi-render web`, requests over loopback with its session cookie.

    .venv/bin/python bench/web.py                 # ~1 minute

Goals (issue 16): tasks page ≤ 300 ms, a 250-frame task page ≤ 500 ms, idle ~0% CPU.
No figure is asserted: this is a measurement, not a test.
"""

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from loadgen import BenchDaemon, percentile, proc_cpu_s

from pi_render.api.client import Client

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "fakes" / "fake_blender.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    took = []
    for _ in range(runs + 2):
        started = time.perf_counter()
        answer = client.get(path)
        took.append(1000 * (time.perf_counter() - started))
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
    return took[2:]  # the first two warm caches


def main() -> int:
    print(f"command: {shlex.join(sys.orig_argv)}")
    config = (f'blender = "{FAKE}"\nblender_env_keep = ["PATH", "FAKE_BLENDER", '
              f'"FAKE_BLENDER_SLEEP"]\n[workers]\ndefault = 2\nrender = 1\n')  # fmt: skip
    os.environ.update({"FAKE_BLENDER": "render", "FAKE_BLENDER_SLEEP": "0"})
    daemon = BenchDaemon(config)
    web = None
    try:
        with Client(daemon.socket, timeout=600) as api:
            for start in range(0, 10_000, 1000):
                api.submit_many([{"type": "noop", "args": {"payload": n}}
                                 for n in range(start, start + 1000)])  # fmt: skip
            scene = Path(tempfile.mkdtemp()) / "scene.blend"
            subprocess.run([sys.executable, "-m", "pi_render", "sample", str(scene),
                            "--frames", "250", "--size", "8"], check=True, cwd=REPO)  # fmt: skip
            render = api.render({"source": str(scene)})
            done = api.wait(render.id, 600)
            assert done.status == "completed", done.error
            while True:  # every task ended: the idle figure below is about the web process
                counts = api.health()["records"]
                if counts["pending"] == counts["running"] == 0:
                    break
                time.sleep(0.5)
            records = sum(counts.values())
        bind = f"127.0.0.1:{free_port()}"
        web = subprocess.Popen([sys.executable, "-m", "pi_render", "web", "--bind", bind,
                                "--socket", str(daemon.socket), "--json"],
                               stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip
        assert web.stdout is not None
        text = b""
        while not text.rstrip().endswith(b"}"):
            text += web.stdout.readline()
        link = json.loads(text)["url"]
        with httpx.Client(base_url=f"http://{bind}", timeout=60) as client:
            assert client.get(link.replace(f"http://{bind}", "")).status_code in (200, 303)
            tasks = timed(client, "/", 20)
            task = timed(client, f"/tasks/{render.id}", 20)
            thumbs = timed(client, f"/tasks/{render.id}/frames/125.jpg", 20)
        cpu0 = proc_cpu_s(web.pid)
        time.sleep(10)  # a measurement of idleness: nothing to wait on but time
        idle = 100 * (proc_cpu_s(web.pid) - cpu0) / 10
        frames = len((done.result or {})["frames"])
        print(f"\n{records} records; task page of a render with {frames} frames (fake Blender)\n")
        print("| page | p50 | p99 | goal |\n|---|---|---|---|")
        print(
            f"| `/` (tasks, 50 a page, of {records}) | {percentile(tasks, 50):.1f} ms | "
            f"{percentile(tasks, 99):.1f} ms | ≤ 300 ms |"
        )
        print(
            f"| `/tasks/{{id}}` (250 frames) | {percentile(task, 50):.1f} ms | "
            f"{percentile(task, 99):.1f} ms | ≤ 500 ms |"
        )
        print(
            f"| a thumbnail (cached) | {percentile(thumbs, 50):.1f} ms | "
            f"{percentile(thumbs, 99):.1f} ms | — |"
        )
        print(f"\nweb process CPU with no browser connected: {idle:.2f}% over 10 s")
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
