"""How long a `pi-render` command takes, whole process, beside `python -c pass` in one run: the
quick path (pi_render/quick.py: stdlib only) and the full CLI (typer, rich, httpx, pydantic)
for the same commands, against a real idle daemon.

    .venv/bin/python bench/cli_latency.py            # ~30 s

Goal (issue 17): `pi-render status ID --json` ≤ 100 ms median. No figure is asserted.
"""

import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from loadgen import BenchDaemon

from pi_render.api.client import Client

RUNS = 30
SCRIPT = Path(sys.executable).parent / "pi-render"
FULL = "import sys; from pi_render.cli import main; sys.argv[0] = 'pi-render'; main()"


def timed(argv: list[str]) -> list[float]:
    took = []
    for _ in range(RUNS + 2):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        took.append(1000 * (time.perf_counter() - started))
    return took[2:]  # the first two warm the page cache


def main() -> int:
    print(f"command: {shlex.join(sys.orig_argv)}")
    daemon = BenchDaemon()
    try:
        with Client(daemon.socket) as api:
            record = api.submit("noop", {})
            api.wait(record.id, 30)
        status = ["status", record.id, "--json", "--socket", str(daemon.socket)]
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("pi-render version", [str(SCRIPT), "version"]),
            ("pi-render status ID --json (quick path)", [str(SCRIPT), *status]),
            ("the same through the full CLI", [sys.executable, "-c", FULL, *status]),
            ("pi-render list --json (quick path)",
             [str(SCRIPT), "list", "--json", "--socket", str(daemon.socket)]),
        ]  # fmt: skip
        took_all = [sorted(timed(argv)) for _, argv in rows]
        base = statistics.median(took_all[0])
        print(f"\n{RUNS} runs each, whole process\n")
        print("| command | median | p90 | × python -c pass |\n|---|---|---|---|")
        for (name, _), took in zip(rows, took_all):
            median = statistics.median(took)
            print(f"| {name} | {median:.1f} ms | {took[int(0.9 * len(took))]:.1f} ms | "
                  f"{median / base:.2f}× |")  # fmt: skip
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
