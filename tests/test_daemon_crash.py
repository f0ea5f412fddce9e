"""kill -9 at random moments: no submitted task is lost, none runs again after it completed."""

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import DaemonProcess, all_records, assert_journal_runs, lines, wait_until

from pi_render.api.client import ApiError, Client
from pi_render.errors import DaemonUnreachable
from pi_render.task.record import TaskRecord

TASKS = int(os.environ.get("PI_RENDER_CRASH_TASKS", "500"))
KILLS = int(os.environ.get("PI_RENDER_CRASH_KILLS", "25"))
WORKERS = 2


class Submitter(threading.Thread):
    """Submits journal tasks until `total` were acknowledged or the daemon goes away."""

    def __init__(self, client: Client, journal: Path, acked: list[str], total: int) -> None:
        super().__init__(daemon=True)
        self.client, self.journal, self.acked, self.total = client, journal, acked, total

    def run(self) -> None:
        while len(self.acked) < self.total:
            try:
                record = self.client.submit("journal", {"journal": str(self.journal)})
            except (DaemonUnreachable, ApiError):
                return  # killed mid-request: that one may or may not exist; both are fine
            self.acked.append(record.id)


def test_kill_9_at_random_points_loses_nothing_and_reruns_nothing_completed(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    seed = int(os.environ.get("PI_RENDER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed {seed}")
    daemon = make_daemon(f"[workers]\ndefault = {WORKERS}\n")
    journal = tmp_path / "journal"
    acked: list[str] = []
    for _ in range(KILLS):
        daemon.start()
        submitter = Submitter(daemon.client, journal, acked, TASKS)
        submitter.start()
        target = len(lines(journal)) + rng.randrange(0, 80)
        wait_until(
            lambda: len(lines(journal)) >= target or not submitter.is_alive(),
            timeout=60,
            what="work to happen before the kill",
        )
        daemon.kill()
        submitter.join(30)
    daemon.start()
    submitter = Submitter(daemon.client, journal, acked, TASKS)
    submitter.run()
    assert len(acked) == TASKS

    def settled() -> list[TaskRecord] | None:
        records = all_records(daemon.client)
        return records if all(r.status.is_final for r in records) else None

    records = wait_until(settled, timeout=120, what="every task to reach a final state")
    by_id = {r.id: r for r in records}
    assert set(acked) <= set(by_id), "a submitted task was lost"
    assert_journal_runs(records, journal)
    reruns = sum(r.attempts - 1 for r in records)
    assert reruns <= KILLS * WORKERS
    health = daemon.client.health()
    assert health["records"]["completed"] == len(records)
    assert sum(q["high"] + q["normal"] + q["taken"] for q in health["queues"].values()) == 0
