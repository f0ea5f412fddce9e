"""Submit-time controls from the fullctl seed: limits (a cap on pending+running instances, globally
or per key), content dedup for renders, and qualifiers (what a worker pool can do)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pi_render.errors import PiRenderError
from pi_render.manifest.contract import RecordStore
from pi_render.processor.gpu import GpuDevice, render_devices
from pi_render.task.record import TaskRecord, TaskStatus

LIVE = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING)


class TaskLimitReached(PiRenderError):
    """Raised when a task type's cap of pending and running instances is reached."""

    http_status = 409


class TooManyQueued(PiRenderError):
    """Raised when one uid already has its maximum of waiting and running tasks."""

    http_status = 429


class NotQualified(PiRenderError):
    """Raised when no worker pool can ever run the task; says what is missing."""

    http_status = 422
    retryable = False


class Limit(BaseModel):
    """`[limits.<type>]`: at most `max` pending+running tasks, per `key` when set: an argument
    name, or "content" (a render's .blend content plus settings)."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(1, ge=1)
    key: str | None = None


class Capabilities(BaseModel):
    """`[capabilities.<label>]`: free-form tags and GPU; Blender's version and engines are found."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list)
    gpu: bool | None = None  # None: detected (a GPU that Blender sees)


class Requirements(BaseModel):
    """What a task (or `[requires.<type>]`) needs from the pool that runs it."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list)
    gpu: bool = False
    blender: str | None = Field(None, pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")  # at least: "3.4"
    engines: list[str] = Field(default_factory=list)


def limit_key(limit: Limit, record: TaskRecord, content_key: str | None) -> str:
    if limit.key is None:
        return "*"
    if limit.key == "content":
        return content_key or "*"
    return f"{limit.key}={record.args.get(limit.key)!r}"


def check_limit(records: RecordStore, limit: Limit, record: TaskRecord, key: str,
                batch: list[TaskRecord]) -> None:  # fmt: skip
    """Raises TaskLimitReached naming a blocking task (already there, or earlier in `batch`)."""
    live = [r for r in [*records.live_of_type(record.type, LIVE), *batch]
            if r.type == record.type and r.limit_key == key]  # fmt: skip
    if len(live) >= limit.max:
        where = "" if key == "*" else f" for {key}"
        raise TaskLimitReached(
            f"task type {record.type!r} allows {limit.max} pending or running{where}; "
            f"blocked by task {live[0].id} ({live[0].status.value})"
        )


def find_duplicate(records: RecordStore, record: TaskRecord) -> TaskRecord | None:
    """A live or completed render of the same content and settings by the same submitter (one
    user is never answered with another's task, which they could not control)."""
    if record.content_key is None:
        return None
    mine = (record.submitted_by or {}).get("uid")
    for other in records.with_content_key(record.content_key):
        theirs = (other.submitted_by or {}).get("uid")
        if other.status in (*LIVE, TaskStatus.COMPLETED) and theirs == mine:
            return other
    return None


def pool_capabilities(label: str, settings_caps: dict[str, Capabilities], versions: list[str],
                      gpus: list[GpuDevice]) -> dict[str, Any]:  # fmt: skip
    """`blender` is the newest version (what `requires.blender` is checked against); `blenders`
    every one (what a file's version is checked against); `gpu`: a GPU that Blender sees
    (GPU discovery), unless the config says."""
    caps = settings_caps.get(label, Capabilities())
    gpu = caps.gpu if caps.gpu is not None else bool(render_devices(gpus))
    engines = ["CYCLES", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH"]
    newest = max(versions, key=version_tuple) if versions else None
    return {"tags": caps.tags, "gpu": gpu, "blender": newest, "blenders": versions,
            "engines": engines if newest else []}  # fmt: skip


def opens(versions: list[str], saved_by: str) -> bool:
    """Whether one of these Blenders opens a file saved by `saved_by` (major.minor: a file of
    3.4 opens in 3.4.1, not in 3.3)."""
    return any(version_tuple(v)[:2] >= version_tuple(saved_by)[:2] for v in versions)


def missing(requirements: Requirements, capabilities: dict[str, Any]) -> list[str]:
    """What the pool lacks; empty when it qualifies."""
    lacks = [f"tag {t!r}" for t in requirements.tags if t not in capabilities["tags"]]
    if requirements.gpu and not capabilities["gpu"]:
        lacks.append("a GPU (none Blender sees: pi-render blenders lists what each one sees)")
    if requirements.blender:
        have = capabilities["blender"]
        if have is None or version_tuple(have) < version_tuple(requirements.blender):
            lacks.append(f"Blender >= {requirements.blender} (found {have or 'none'})")
    lacks += [f"engine {e}" for e in requirements.engines if e not in capabilities["engines"]]
    return lacks


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3]
                 if part.isascii() and part.isdigit() and len(part) <= 9)  # fmt: skip
