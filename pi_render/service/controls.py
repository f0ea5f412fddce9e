"""What submissions are checked against, built from the config (and rebuilt on reload)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pi_render.controls import Limit, Requirements
from pi_render.task.output_space import TrialRender


@dataclass(frozen=True)
class SubmitControls:
    """Config the service checks each submission against."""

    limits: dict[str, Limit]
    requires: dict[str, Requirements]
    # (label, does the task need a GPU?) → what its pool offers (farm mode: a list, one per
    # online host with workers for it); a GPU task waits for GPU discovery to have answered
    capabilities: Callable[[str, bool], dict[str, Any] | list[dict[str, Any]]]
    roots: tuple[tuple[Path, ...], tuple[Path, ...]] = ((Path("/"),), (Path("/"),))
    max_queued_per_uid: int | None = None
    min_free_bytes: int = 0
    allow_missing: bool = False  # a render's default when files its .blend needs are missing
    max_snapshot_bytes: int = 64 << 30
    sandboxed: bool = True  # False: no sandbox for Blender, so only the daemon's uid may render
    max_args_bytes: int = 64 << 10  # a task's arguments are kept with its record for weeks
    quota_bytes_per_uid: int | None = None  # records, snapshots and uploads one uid may keep
    chunk_size: int = 0  # a render's frames per chunk task when it does not say (0: one task)
    farm_form: Callable[[str], str] = str  # farm mode: this host's paths as the farm records them
    trial_frame: "TrialRender | None" = None  # renders one frame to learn its size (--check-space)


def no_controls() -> SubmitControls:
    """What a service without a config checks: nothing but the task types' own rules."""
    return SubmitControls({}, {}, lambda label, gpu: {})
