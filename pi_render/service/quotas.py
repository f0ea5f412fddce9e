"""Per-uid quotas: what one user's tasks keep on the data disk (their records, the snapshots they
hold and uploads not yet run) is bounded, finished tasks included, until they are forgotten
(`pi-render forget`) or pruned. Root and the daemon's own user are exempt."""

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pi_render.errors import PiRenderError
from pi_render.task.record import TaskRecord

UPLOAD_FOLDER_BYTES = (
    4096  # an upload folder costs at least this, empty or not: folders are bounded
)


class QuotaExceeded(PiRenderError):
    """Raised when a submit or upload would take a uid past `quota_bytes_per_uid`."""

    http_status = 429


def record_bytes(record: TaskRecord) -> int:
    """What a task keeps on the data disk: its record and its snapshot's files."""
    snapshot = record.args.get("snapshot_bytes") if isinstance(record.args, dict) else None
    return len(record.model_dump_json()) + int(snapshot or 0)


class Quotas:
    """Counts a uid's bytes when asked (nothing cached: a forget or a prune frees them at once)."""

    def __init__(self, bytes_of_uid: Callable[[int], int], uploads_dir: Path,
                 limit: int | None) -> None:  # fmt: skip
        self.bytes_of_uid, self.uploads_dir, self.limit = bytes_of_uid, uploads_dir, limit

    def applies(self, uid: int | None) -> bool:
        return self.limit is not None and uid is not None and uid not in (0, os.getuid())

    def usage(self, uid: int) -> int:
        """Bytes of `uid`'s records and snapshots plus its uploads not yet run."""
        return self.bytes_of_uid(uid) + self._upload_bytes(uid)

    def check(self, uid: int | None, adding: int) -> None:
        """Raises QuotaExceeded when `adding` bytes would take `uid` past its quota."""
        if not self.applies(uid) or uid is None or self.limit is None:
            return
        used = self.usage(uid)
        if used + adding > self.limit:
            raise QuotaExceeded(
                f"uid {uid} keeps {used:,} bytes of tasks and uploads here; {adding:,} more would "
                f"pass quota_bytes_per_uid ({self.limit:,}): `pi-render forget` finished tasks "
                f"to free room (outputs stay)"
            )

    def _upload_bytes(self, uid: int) -> int:
        """Upload folders owned by `uid`, all they hold (bytes on disk, subfolders too); a folder
        is removed once its task has taken its snapshot, so nothing is counted twice."""
        total = 0
        try:
            entries = list(os.scandir(self.uploads_dir))
        except OSError:
            return 0
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if info.st_uid == uid and stat.S_ISDIR(info.st_mode):
                total += max(_bytes_under(entry.path), UPLOAD_FOLDER_BYTES)
        return total


def _bytes_under(folder: str, max_entries: int = 100_000) -> int:
    """Bytes on disk under `folder` (a sparse file counts what it takes); past `max_entries`
    entries the folder counts as huge: it is its owner's to empty."""
    total, seen = 0, 0
    for path, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            seen += 1
            if seen > max_entries:
                return 1 << 62
            try:
                total += os.lstat(os.path.join(path, name)).st_blocks * 512
            except OSError:
                continue
    return total
