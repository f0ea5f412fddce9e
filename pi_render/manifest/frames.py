"""The per-frame ledger: every validated output frame, recorded durably as it lands.

After a crash the re-delivered render asks the ledger which frames are done, checks that their
files are still there, and renders only the rest.
"""

from pathlib import Path

from pydantic import BaseModel

from pi_render.manifest.base import DurableJsonTable

TABLE = "frames"


class FrameOutput(BaseModel):
    """One output file: its frame number, where it is, its size and its SHA-256."""

    frame: int
    path: str
    size: int
    sha256: str


class FrameLedger:
    """Keys are `<task id>/<frame, zero-padded>`, so one task's frames are a key range."""

    def __init__(self, path: Path) -> None:
        self._store = DurableJsonTable(path, TABLE)

    def put(self, task_id: str, output: FrameOutput) -> None:
        self._store.stage(f"{task_id}/{output.frame + 2**31:010d}", output.model_dump_json())
        self._store.commit()

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
