"""The workers' path alone, without HTTP: N noop tasks drained through one QueueWorker on real
SQLite files, for this checkout and another (a worktree of an older commit), alternating, in one
run; prints a table with each run and the ratio of the means.

    git worktree add /tmp/before 95fa735
    .venv/bin/python bench/worker_drain.py --other /tmp/before --tasks 2000 --runs 4
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

DRAIN = """
import sys, tempfile, time
from pathlib import Path
import pi_render.processor  # noqa: F401  (registers the processors)
from pi_render.clock import SystemClock
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.queue.sqlite import SqliteTaskQueue
from pi_render.task.record import Priority, TaskRecord
from pi_render.workers.queue_worker import QueueWorker
from pi_render.workers.running import RunningTasks
n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    clock, folder = SystemClock(), Path(tmp)
    ids = TaskIdGenerator(clock)
    records = TaskRecordManifest(folder / "r.sqlite")
    queue = SqliteTaskQueue(folder / "q.db")
    made = [TaskRecord(id=ids.new(), type="noop", label="default", created_at=clock.now())
            for _ in range(n)]
    records.create_many(made)
    for record in made:
        queue.put(record.id, Priority.NORMAL)
    worker = QueueWorker("w", queue, records, RunningTasks(), clock, 0.01)
    start = time.perf_counter()
    while worker.run_once():
        pass
    print(n / (time.perf_counter() - start))
"""


def rate(tree: Path, tasks: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", DRAIN, str(tasks)], cwd=tree, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the other code tree")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    rates: dict[str, list[float]] = {"other": [], "this": []}
    for _ in range(args.runs):
        rates["other"].append(rate(args.other.resolve(), args.tasks))
        rates["this"].append(rate(here, args.tasks))
    print("| tree | runs (tasks/s) | mean |\n|---|---|---|")
    for name, tree in (("other", args.other), ("this", here)):
        runs = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"| {name} ({tree}) | {runs} | {statistics.mean(rates[name]):,.0f} |")
    ratio = statistics.mean(rates["this"]) / statistics.mean(rates["other"])
    print(f"\nthis / other: {ratio:.2f}x")


if __name__ == "__main__":
    main()
