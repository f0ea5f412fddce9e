"""The body of `POST /render-tasks` from `pi-render render`'s options: one builder for the full
CLI (pi_render/cli/render.py) and the quick path (pi_render/quick.py). Standard library only."""

import os
from typing import Any


def parse_frames(spec: str) -> tuple[int, int]:
    """`1-100` → (1, 100); `7` → (7, 7). Raises ValueError."""
    start, _, end = spec.partition("-")
    return int(start), int(end or start)


def render_request(file: str, *, blend: str | None = None, frames: str | None = None,
                   step: int | None = None, output_type: str | None = None,
                   output: str | None = None, scene: str | None = None,
                   engine: str | None = None, priority: str = "normal",
                   timeout: float | None = None, force: bool = False,
                   allow_missing: bool = False,
                   chunk_size: int | None = None,
                   device: str | None = None,
                   check_space: bool = False) -> dict[str, Any]:  # fmt: skip
    """Paths made absolute (the daemon resolves nothing relative to its own folder); options
    not given are left out, so the file's own settings apply. Raises ValueError on `frames`."""
    request: dict[str, Any] = {
        "source": absolute(file), "blend": blend, "frame_step": step,
        "output_type": output_type, "scene": scene, "engine": engine, "timeout_s": timeout,
        "priority": priority, "force": force or None, "allow_missing": allow_missing or None,
        "chunk_size": chunk_size, "device": device, "check_space": check_space or None}  # fmt: skip
    if frames:
        request["start_frame"], request["end_frame"] = parse_frames(frames)
    if output:
        request["output_dir"] = absolute(output)
    return {k: v for k, v in request.items() if v is not None}


def absolute(path: str) -> str:
    """As `Path(path).expanduser().absolute()` gives it (no symlink resolved)."""
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(os.getcwd(), expanded)
