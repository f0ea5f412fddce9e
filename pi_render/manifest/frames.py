"""The per-frame ledger: every validated output frame, recorded durably as it lands.

After a crash the re-delivered render asks the ledger which frames are done, checks that their
files are still there, and renders only the rest.
"""

from pathlib import Path
from typing import NamedTuple, Protocol

from pydantic import BaseModel

from pi_render.manifest.base import DurableJsonTable

TABLE = "frames"


class FrameOutput(BaseModel):
    """One output file: its frame number, where it is, its size and its SHA-256."""

    frame: int
    path: str
    size: int
    sha256: str
    host: str | None = None  # farm mode: the host that rendered it


class Holder(NamedTuple):
    """Who writes a frame: a task and the attempt it holds (a stale attempt's write is refused)."""

    task_id: str
    attempt: int


class FrameStore(Protocol):
    """The frame ledger's contract. `key` is the task's own id, or its job's for a chunk, so a
    job's frames are one set however its chunks ran. `fence` raises StaleAttempt when `holder`
    no longer holds its task (farm mode: another host took it over); `put` does the same check
    in the write itself."""

    def fence(self, holder: Holder) -> None: ...

    def put(self, key: str, output: FrameOutput, holder: Holder | None = None) -> None: ...

    def get(self, key: str) -> list[FrameOutput]: ...

    def flush(self) -> int:
        """Report frames kept locally while the store was away (farm mode); returns how many.
        Raises StorageError while it still is."""

    def kept(self) -> int:
        """How many frames wait locally to be reported."""

    def forget_task(self, task_id: str) -> None: ...

    def close(self) -> None: ...


class FrameLedger:
    """Keys are `<task id>/<frame, zero-padded>`, so one task's frames are a key range."""

    def __init__(self, path: Path) -> None:
        self._store = DurableJsonTable(path, TABLE)

    def fence(self, holder: Holder) -> None:
        """One host: the task's queue delivery is this process's alone, never taken over."""

    def put(self, key: str, output: FrameOutput, holder: Holder | None = None) -> None:
        self._store.stage(f"{key}/{output.frame + 2**31:010d}", output.model_dump_json())
        self._store.commit()

    def flush(self) -> int:
        return 0  # one host: every frame is recorded as it lands

    def kept(self) -> int:
        return 0

    def get(self, task_id: str) -> list[FrameOutput]:
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE key >= ? AND key < ? ORDER BY key",
            (f"{task_id}/", f"{task_id}0"),  # "0" sorts right after "/"
        )
        return [FrameOutput.model_validate_json(row[0]) for row in rows]

    def forget_task(self, task_id: str) -> None:
        self._store.delete_prefix(f"{task_id}/")
        self._store.commit()

    def close(self) -> None:
        self._store.close()
