"""The daemon's own periodic jobs, run by the cron worker: queue maintenance, retention of old
records (their logs and spool; outputs only when configured) and the watch folder."""

import logging
import shutil
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from pi_render.clock import Clock
from pi_render.config import Settings
from pi_render.errors import PiRenderError
from pi_render.manifest.contract import RecordStore
from pi_render.processor.disk_space import FrameSizes
from pi_render.queue.base import TaskQueue
from pi_render.service import TaskService
from pi_render.snapshot.store import ContentStore
from pi_render.task.record import TaskRecord

log = logging.getLogger(__name__)


def maintain_queues(queues: list[TaskQueue]) -> None:
    for queue in queues:
        queue.maintain()
    log.info("queues maintained", extra={"queues": len(queues)})


def prune_old_records(
    records: RecordStore,
    settings: Settings,
    now: datetime,
    forget: list[Callable[[str], None]] | None = None,
) -> int:
    """Delete finished records older than `retention_days`, with their logs and spool, what the
    other stores keep of them (`forget`), and uploads that were never run."""
    cutoff = (now - timedelta(days=settings.retention_days)).isoformat().replace("+00:00", "Z")
    pruned = 0
    while batch := records.finished_before(cutoff):
        for record in batch:
            forget_task(records, settings, record, forget or [], settings.retention_outputs)
            pruned += 1
    _prune_abandoned_uploads(records, settings, now)
    # files no snapshot links any more (their tasks' spools are gone)
    ContentStore(settings.paths.store).collect_garbage(now=now.timestamp())
    FrameSizes(settings.paths.frame_sizes).prune(now.timestamp() - settings.retention_days * 86400)
    if pruned:
        log.info("pruned old records", extra={"count": pruned})
    return pruned


def forget_task(records: RecordStore, settings: Settings, record: TaskRecord,
                forget: list[Callable[[str], None]], outputs: bool = False) -> None:  # fmt: skip
    """Delete a finished task's log, spool, upload, what the other stores keep of it, and then its
    record (last: a crash halfway leaves a record whose forget can run again)."""
    forget_files(settings, record, forget, outputs)
    records.delete(record.id)


def forget_files(settings: Settings, record: TaskRecord, forget: list[Callable[[str], None]],
                 outputs: bool = False) -> None:  # fmt: skip
    """What a task left beside its record: log, spool, upload, the other stores' entries (and its
    outputs when asked). Safe to repeat."""
    (settings.paths.log_of(record.id)).unlink(missing_ok=True)
    shutil.rmtree(settings.paths.spool / record.id, ignore_errors=True)
    shutil.rmtree(settings.paths.upload_of(record.id), ignore_errors=True)
    if outputs and record.result:
        _delete_outputs(record.result)
    for drop in forget:
        drop(record.id)


class WatchFolder:
    """Renders each .blend or .zip dropped into the inbox, once it has stopped changing; moves it
    to `submitted/` (or `rejected/` with a .txt saying why). Never submits a file twice."""

    def __init__(self, inbox: Path, service: TaskService, records: RecordStore,
                 clock: Clock, settle_s: float) -> None:  # fmt: skip
        self.inbox, self.service, self.records = inbox, service, records
        self.clock, self.settle_s = clock, settle_s
        self._seen: dict[Path, tuple[int, int, float]] = {}  # size, mtime, first seen so

    def scan(self) -> int:
        """Submit every settled file; returns how many were handled."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        handled = 0
        now = self.clock.monotonic()
        present = set()
        for path in sorted(self.inbox.iterdir()):
            if not path.is_file() or path.suffix.lower() not in (".blend", ".zip"):
                continue
            present.add(path)
            stat = path.stat()
            key = (stat.st_size, stat.st_mtime_ns)
            seen = self._seen.get(path)
            if seen is None or seen[:2] != key:
                self._seen[path] = (*key, now)
                continue
            if now - seen[2] < self.settle_s:
                continue
            self._handle(path, f"watch:{path}:{key[0]}:{key[1]}")
            self._seen.pop(path, None)
            handled += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return handled

    def _handle(self, path: Path, origin: str) -> None:
        if self.records.find_origin(origin) is None:  # not submitted before a crash
            try:
                args: dict[str, object] = {"source": str(path)}
                if path.suffix.lower() == ".zip":
                    args["blend"] = _only_blend(path)
                record, _ = self.service.submit("render", args, origin=origin)
            except Exception as exc:  # whatever it is, the file is rejected, never retried forever
                target = _move(path, self.inbox / "rejected")
                target.with_name(target.name + ".txt").write_text(f"{exc}\n")
                log.warning("watch folder rejected a file: %s", exc, extra={"file": str(path)})
                return
            log.info("watch folder submitted a render",
                     extra={"file": str(path), "task_id": record.id})  # fmt: skip
        _move(path, self.inbox / "submitted")


def _prune_abandoned_uploads(records: RecordStore, settings: Settings,
                             now: datetime) -> None:  # fmt: skip
    """Upload (and spool) folders of tasks that were never run, once they are old."""
    cutoff = (now - timedelta(days=settings.retention_days)).timestamp()
    folders = [p for base in (settings.paths.spool, settings.paths.uploads) if base.is_dir()
               for p in base.iterdir()]  # fmt: skip
    for folder in folders:
        try:
            old = folder.stat().st_mtime < cutoff
        except OSError:
            continue
        if old and records.find(folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)


def _delete_outputs(result: dict[str, object]) -> None:
    """Only the files the task itself recorded; its folder too if that leaves it empty."""
    frames = result.get("frames")
    for frame in frames if isinstance(frames, list) else []:
        Path(str(frame.get("path"))).unlink(missing_ok=True)
    folder = result.get("output_dir")
    if isinstance(folder, str):
        try:
            Path(folder).rmdir()
        except OSError:
            pass  # not empty: other files (of other tasks?) stay


def _only_blend(zip_path: Path) -> str:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            blends = [n for n in archive.namelist() if n.lower().endswith(".blend")]
    except zipfile.BadZipFile:
        raise PiRenderError(f"{zip_path.name} is not a valid zip file") from None
    if len(blends) != 1:
        raise PiRenderError(f"{zip_path.name} has {len(blends)} .blend files; it needs exactly one")
    return blends[0]


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    counter = 1
    while target.exists():
        target = folder / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    path.rename(target)
    return target
