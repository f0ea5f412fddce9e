"""Injected with `--python` after the .blend loads (or called by bpy_runner.py): puts every scene's
Cycles on the device pi-render chose, with no user preferences file.

    -- --pi-render-device '{"device": "GPU", "backend": "CUDA", "ids": ["CUDA_…"]}'

`ids` null: every device of the backend; a list: only those (one GPU per worker). Runs inside
Blender, so it imports only bpy and the stdlib.
"""

import json
import sys

import bpy

MARK = "@@PI_RENDER"


def apply(spec: str) -> None:
    want = json.loads(spec)
    device = "GPU" if want.get("device") == "GPU" else "CPU"
    if device == "GPU":
        prefs = bpy.context.preferences.addons["cycles"].preferences
        backend = want["backend"]
        prefs.compute_device_type = backend
        ids = want.get("ids")
        enabled = []
        for entry in prefs.get_devices_for_type(backend):  # also refreshes the list
            entry.use = entry.type != "CPU" and (ids is None or entry.id in ids)
            if entry.use:
                enabled.append(entry.id)
        if not enabled or (ids is not None and sorted(enabled) != sorted(ids)):
            raise RuntimeError(f"GPU device not available: {backend} {ids or 'any'} "
                               f"(this Blender sees {enabled or 'none'})")  # fmt: skip
        print(f"pi-render: Cycles on {backend}: {', '.join(enabled)}")
    for scene in bpy.data.scenes:
        scene.cycles.device = device
    sys.stdout.write(f"{MARK} device {device}\n")
    sys.stdout.flush()


def _spec_from_argv() -> str | None:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if "--pi-render-device" in argv:
        return argv[argv.index("--pi-render-device") + 1]
    return None


if __name__ == "__main__":  # run by `--python`; bpy_runner.py imports it
    spec = _spec_from_argv()
    if spec:
        apply(spec)
