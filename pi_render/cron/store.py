"""Each cron job's last fire, kept durably: a fire is never repeated after a restart."""

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from pi_render.manifest.base import DurableJsonTable


class CronState(BaseModel):
    name: str
    schedule: str
    last_fire: datetime | None = None
    next_fire: datetime | None = None
    firing: datetime | None = None  # marked before the task is submitted


class CronStore:
    def __init__(self, path: Path) -> None:
        self._store = DurableJsonTable(path, "cron")

    def get(self, name: str) -> CronState | None:
        text = self._store.text(name)
        return None if text is None else CronState.model_validate_json(text)

    def put(self, state: CronState) -> None:
        self._store.stage(state.name, state.model_dump_json())
        self._store.commit()

    def close(self) -> None:
        self._store.close()
