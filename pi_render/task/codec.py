"""The one JSON codec for everything on disk and on the wire: never pickle."""

import json
from typing import Any

from pi_render.task.record import TaskRecord


def dumps(value: Any) -> str:
    """Compact JSON; the queues and manifests store text a person can read with sqlite3."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def record_to_json(record: TaskRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def record_from_json(data: dict[str, Any]) -> TaskRecord:
    return TaskRecord.model_validate(data)
