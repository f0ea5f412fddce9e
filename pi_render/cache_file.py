"""Small JSON cache files (GPU discovery, frame sizes): written whole or not at all, read with a
bound. A lost or torn one only costs a recomputation, so nothing here is fsynced."""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write `data` beside `path` and rename it into place (its folder made 0700 if missing);
    a failed write leaves no temp file behind.

    Raises:
        OSError: the folder or the file could not be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def read_json(path: Path, limit: int) -> Any:
    """The JSON in `path` (at most `limit` bytes of it); None when it is missing or unreadable."""
    try:
        with open(path, "rb") as file:
            return json.loads(file.read(limit))
    except (OSError, ValueError):
        return None
