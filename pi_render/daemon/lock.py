"""One daemon per data directory: an flock on a lock file that names its holder."""

import fcntl
import json
import os
from pathlib import Path
from typing import IO

from pi_render.errors import DaemonAlreadyRunning
from pi_render.fsync import make_dirs


class DataDirLock:
    """Held for the daemon's lifetime; the kernel drops it if the daemon dies, even by kill -9."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, socket_path: Path) -> None:
        """Raises DaemonAlreadyRunning, naming the holder."""
        make_dirs(self.path.parent)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            handle.close()
            try:
                info = json.loads(holder)
            except ValueError:
                info = {}
            raise DaemonAlreadyRunning(
                f"another pi-render daemon (pid {info.get('pid', '?')}, socket "
                f"{info.get('socket', '?')}) is already running on data dir {self.path.parent}; "
                f"stop it first (pi-render health shows it)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "socket": str(socket_path)}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
