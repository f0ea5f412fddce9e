"""Every path under the data dir, named in one place (the daemon, its stores, retention and the
service all ask here; none builds a path of its own)."""

from dataclasses import dataclass
from pathlib import Path

from pi_render.locations import default_data_dir, default_socket  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class DataDir:
    """`root` is this host's; `shared` (farm mode) holds what every host must see: snapshots,
    uploads, task logs and the default outputs."""

    root: Path
    shared: Path | None = None

    @property
    def common(self) -> Path:
        return self.shared if self.shared is not None else self.root

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
    def farm_outbox(self) -> Path:
        """Farm mode: frames landed while the database was away, until reported."""
        return self.root / "farm-outbox.sqlite"

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
        return self.common / "spool"

    @property
    def store(self) -> Path:
        return self.common / "store"

    @property
    def uploads(self) -> Path:
        return self.common / "uploads"

    @property
    def frame_sizes(self) -> Path:
        """A frame's size per file (a cache: a submit projects disk use from it)."""
        return self.common / "frame-sizes"

    @property
    def logs(self) -> Path:
        return self.common / "logs"

    @property
    def output(self) -> Path:
        """The default outputs' parent (unless `output_root` is set)."""
        return self.common / "output"

    def spool_of(self, task_id: str) -> Path:
        return self.spool / task_id

    def work_of(self, task_id: str) -> Path:
        """A render's partial folder and pid file: this host's (see ProcessorEnv.work)."""
        return self.spool_of(task_id) if self.shared is None else self.root / "work" / task_id

    def upload_of(self, task_id: str) -> Path:
        return self.uploads / task_id

    def log_of(self, task_id: str) -> Path:
        return self.logs / f"{task_id}.log"
