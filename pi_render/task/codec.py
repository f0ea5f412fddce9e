"""The one JSON codec for everything on disk and on the wire: never pickle."""

import json
from typing import Any


def dumps(value: Any) -> str:
    """Compact JSON; the queues and manifests store text a person can read with sqlite3."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)
