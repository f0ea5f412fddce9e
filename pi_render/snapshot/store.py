"""A content-addressed store: each distinct file once (`store/ab/abcd…`), hard-linked into the
snapshots that use it, so a library shared by fifty shots takes its space once.

Objects are read-only. One is garbage when no snapshot links it any more (a link count of 1).
"""

import errno
import hashlib
import logging
import os
import uuid
from pathlib import Path

from pi_render.clock import SYSTEM
from pi_render.fsync import fsync_path, make_dirs

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_NO_LINK = (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP)


class ContentStore:
    """Files by their SHA-256, shared by hard links (a copy where the file system has none)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp = root / "tmp"

    def object_path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def add_bytes(self, data: bytes, target: Path) -> str:
        """Store `data` and place it at `target`; returns its SHA-256."""
        temp = self._temp()
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        digest = hashlib.sha256(data).hexdigest()
        self._place(temp, digest, target)
        return digest

    def add_from(self, fd: int, limit: int, target: Path, share: bool = True) -> tuple[str, int]:
        """Copy an open file (at most `limit` bytes) into the store and place it at `target`;
        `share=False` gives the snapshot its own copy (a cache Blender may write to).

        Raises:
            OSError: EFBIG when the file is larger than `limit`.
        """
        temp = self._temp()
        digest, size = hashlib.sha256(), 0
        try:
            with open(temp, "wb") as handle:
                while chunk := os.read(fd, CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        hexdigest = digest.hexdigest()
        if share:
            self._place(temp, hexdigest, target)
        else:
            make_dirs(target.parent)
            os.replace(temp, target)
            fsync_path(target.parent)
        return hexdigest, size

    def _temp(self) -> Path:
        make_dirs(self.temp)
        return self.temp / uuid.uuid4().hex

    def _place(self, temp: Path, digest: str, target: Path) -> None:
        """`target` gets the stored object if there is one, else `temp` becomes the object."""
        make_dirs(target.parent)
        stored = self.object_path(digest)
        try:
            if os.stat(stored).st_size != os.stat(temp).st_size:
                # changed behind our back (it must not be: objects are read-only): replace it
                log.warning("store: object %s no longer matches its name; replaced", digest)
                os.unlink(stored)
            os.link(stored, target)  # already stored: share it
            fsync_path(target.parent)
            temp.unlink()
            return
        except FileNotFoundError:
            pass  # new content (or just collected as garbage)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            os.replace(temp, target)  # no hard links here: the snapshot keeps its own copy
            fsync_path(target.parent)
            return
        os.chmod(temp, 0o444)
        make_dirs(stored.parent)
        try:
            os.link(temp, stored)
            fsync_path(stored.parent)
        except FileExistsError:
            pass  # stored meanwhile by another submit: this snapshot keeps its own copy
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        os.replace(temp, target)
        fsync_path(target.parent)

    def collect_garbage(self, min_age_s: float = 3600.0, now: float | None = None) -> int:
        """Delete objects no snapshot links any more (and old temp files); returns how many.
        Young objects are left alone: a submit may be about to link them."""
        now = SYSTEM.now().timestamp() if now is None else now
        removed = 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                try:
                    info = item.lstat()
                except OSError:
                    continue
                single = info.st_nlink <= 1 or folder == self.temp
                if single and now - info.st_mtime > min_age_s:
                    item.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("store: removed unused files", extra={"count": removed})
        return removed
