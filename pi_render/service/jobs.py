"""Render jobs in chunks: a job's frames split into chunk tasks (any worker, on any host, takes
any chunk); the job's own record is never queued: its status, progress, ETA and frames are
those of its chunks, brought together each time one of them changes."""

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pi_render.clock import Clock
from pi_render.errors import PiRenderError
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.frames import FrameOutput, FrameStore
from pi_render.task import lifecycle
from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus

log = logging.getLogger(__name__)

MAX_CHUNKS = 1000  # a job of more chunks gets bigger ones: a record per frame is no job


def split(job: TaskRecord, chunk_size: int, new_id: Callable[[], str]) -> list[TaskRecord]:
    """The chunk tasks of a render job: `chunk_size` frames each (of its frame list, so the
    frame step is kept). Returns [] when it is one chunk anyway (it renders as itself)."""
    args = job.args
    if chunk_size <= 0 or args.get("output_type") == "FFMPEG":
        return []  # a video is one file: it cannot be rendered in pieces
    step = int(args.get("frame_step") or 1)
    frames = range(int(args["start_frame"]), int(args["end_frame"]) + 1, step)  # never listed
    if len(frames) <= chunk_size:
        return []
    chunk_size = max(chunk_size, -(-len(frames) // MAX_CHUNKS))
    chunks = []
    for first in range(0, len(frames), chunk_size):
        part = frames[first : first + chunk_size]
        chunk_args = {
            **args,
            "start_frame": part[0],
            "end_frame": part[-1],
            "chunk_size": 0,
            "snapshot_bytes": 0,
        }  # the job's snapshot: counted once, on the job
        chunks.append(job.model_copy(update={
            "id": new_id(), "args": chunk_args, "job": job.id, "content_key": None,
            "origin": None, "parent": None}))  # fmt: skip
    return chunks


def summarize(job: TaskRecord, chunks: list[TaskRecord], frames: list[FrameOutput],
              now: datetime) -> TaskRecord | None:  # fmt: skip
    """The job as its chunks have it; None when nothing changed (or it has ended)."""
    if job.status.is_final or not chunks:
        return None
    statuses = [chunk.status for chunk in chunks]
    total = sum(_frames_of(chunk) for chunk in chunks)
    done = len(frames)  # the ledger is the truth: each landed frame once
    hosts: dict[str, int] = {}
    for frame in frames:
        hosts[frame.host or "local"] = hosts.get(frame.host or "local", 0) + 1
    started = [chunk.started_at for chunk in chunks if chunk.started_at is not None]
    eta = None
    if started and 0 < done < total:
        elapsed = (now - min(started)).total_seconds()
        eta = round(elapsed / done * (total - done), 1)
    detail = {"frames_done": done, "frames_total": total,
              "percent": round(100.0 * done / total, 1) if total else 100.0, "eta_s": eta,
              "chunks_total": len(chunks),
              "chunks": {s.value: statuses.count(s) for s in TaskStatus if s in statuses},
              "hosts": hosts}  # fmt: skip
    update: dict[str, Any] = {"progress": done / total if total else 1.0,
                              "progress_detail": detail,
                              "started_at": min(started) if started else None}  # fmt: skip
    if all(s is TaskStatus.COMPLETED for s in statuses):
        result = {
            "output_dir": job.args.get("output_dir"),
            "frames": [f.model_dump(mode="json") for f in frames],
            "fps": job.args.get("fps"),
            "warnings": job.args.get("warnings", []),
        }
        return lifecycle.complete(job.model_copy(update={**update,
                                                         "status": TaskStatus.RUNNING}),
                                  now, result)  # fmt: skip
    failed = [chunk for chunk in chunks if chunk.status is TaskStatus.FAILED]
    if failed:
        errors = [error for chunk in failed for error in chunk.errors] or [
            chunk.error for chunk in failed if chunk.error is not None
        ]
        first = failed[0].error or ErrorInfo(type="ChunkFailed", message="a chunk failed")
        error = ErrorInfo(
            type=first.type,
            message=f"chunk {failed[0].id} (frames "
            f"{_range_of(failed[0])}) failed: {first.message}",
            host=first.host,
        )
        return job.model_copy(update={**update, "status": TaskStatus.FAILED, "error": error,
                                      "errors": errors, "finished_at": now})  # fmt: skip
    if any(s is TaskStatus.CANCELLED for s in statuses):
        return lifecycle.cancel(job.model_copy(update=update), now, "a chunk was cancelled")
    running = any(s is not TaskStatus.PENDING for s in statuses)
    status = TaskStatus.RUNNING if running else TaskStatus.PENDING
    changed = job.model_copy(update={**update, "status": status})
    if changed.model_dump(exclude={"version"}) == job.model_dump(exclude={"version"}):
        return None
    return changed


def _frames_of(chunk: TaskRecord) -> int:
    args = chunk.args
    return len(range(int(args["start_frame"]), int(args["end_frame"]) + 1,
                     int(args.get("frame_step") or 1)))  # fmt: skip


def _range_of(chunk: TaskRecord) -> str:
    return f"{chunk.args.get('start_frame')}-{chunk.args.get('end_frame')}"


class Jobs:
    """Keeps each job's record in step with its chunks (a records listener). A chunk's move to
    another status updates its job at once; progress alone at most once a second per job."""

    PROGRESS_EVERY_S = 1.0

    def __init__(self, records: RecordStore, frames: FrameStore, clock: Clock,
                 cancel: Callable[[str], Any]) -> None:  # fmt: skip
        self.records, self.frames, self.clock, self.cancel = records, frames, clock, cancel
        self._seen: dict[str, TaskStatus] = {}  # chunk → the status it last had here
        self._updated: dict[str, float] = {}  # job → when this process last updated it
        self._lock = threading.Lock()

    def on_record(self, record: TaskRecord) -> None:
        if record.job is None or record.version == 0:
            return  # not a chunk, or one just created (its job was written with it)
        with self._lock:
            moved = self._seen.get(record.id) is not record.status
            self._seen[record.id] = record.status
            if record.status.is_final:
                self._seen.pop(record.id, None)
            now = self.clock.monotonic()
            if not moved and now - self._updated.get(record.job, -1e9) < self.PROGRESS_EVERY_S:
                return
            self._updated[record.job] = now
        try:
            self.update(record.job)
        except PiRenderError as exc:  # the next chunk change (or the periodic sweep) catches up
            log.warning("job not updated: %s", exc, extra={"task_id": record.job})

    def update(self, job_id: str) -> TaskRecord | None:
        """Read the job's version, its chunks and frames, then compare-and-set the job only if
        it is still at that version (else read again). Reads come first, not inside the change
        (that would hold one connection while asking for another); the version check keeps a
        summary read before a retry of the job from failing it again."""
        job: TaskRecord | None = None
        chunks: list[TaskRecord] = []
        for _ in range(5):
            seen = self.records.get(job_id).version
            chunks = self.records.chunks_of(job_id)
            frames = self.frames.get(job_id)
            now = self.clock.now()
            moved: list[bool] = []

            def change(j: TaskRecord) -> TaskRecord | None:
                if j.version != seen:
                    moved.append(True)
                    return None
                return summarize(j, chunks, frames, now)

            job = self.records.change(job_id, change)
            if not moved:
                break
        if job is not None and job.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            for chunk in chunks:  # the job has ended: the rest would be wasted work
                if not chunk.status.is_final:
                    try:
                        self.cancel(chunk.id)
                    except PiRenderError:
                        pass  # ended meanwhile
        if job is not None and job.status.is_final:
            with self._lock:
                self._updated.pop(job_id, None)
        return job

    def sweep(self) -> int:
        """Bring every unfinished job up to date (a chunk's end whose job update failed, an
        outage): returns how many changed."""
        changed = 0
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            for job in self.records.with_status(status):
                if job.chunks and self.update(job.id) is not None:
                    changed += 1
        return changed
