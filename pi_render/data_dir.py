"""Every path under the data dir, named in one place (the daemon, its stores, retention and the
service all ask here; none builds a path of its own)."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    root: Path

    # stores
    @property
    def records(self) -> Path:
        return self.root / "records.sqlite"

    @property
    def frames(self) -> Path:
        return self.root / "frames.sqlite"

    @property
    def cron(self) -> Path:
        return self.root / "cron.sqlite"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.sqlite"

    @property
    def workflows(self) -> Path:
        return self.root / "workflows.sqlite"

    @property
    def queues(self) -> Path:
        return self.root / "queues"

    def queue(self, label: str) -> Path:
        return self.queues / f"{label}.db"

    @property
    def paused_labels(self) -> Path:
        return self.root / "paused-labels.json"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    # per task
    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def output(self) -> Path:
        """The default outputs' parent (unless `output_root` is set)."""
        return self.root / "output"

    def spool_of(self, task_id: str) -> Path:
        return self.spool / task_id

    def upload_of(self, task_id: str) -> Path:
        return self.uploads / task_id

    def log_of(self, task_id: str) -> Path:
        return self.logs / f"{task_id}.log"
