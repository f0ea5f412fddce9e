"""Where a render runs (the CPU, or which GPUs) and how Blender is told. The config's `device`, the
task's, the worker's own GPU (`gpu_per_worker`), what this Blender sees and a GPU failure of the
attempt before (with `gpu_fallback = "cpu"`) decide it."""

import json
from dataclasses import dataclass
from typing import Any, Literal

from pi_render.errors import PiRenderError
from pi_render.processor.gpu import GpuDevice, render_devices, same_gpu

DeviceSetting = Literal["auto", "cpu", "gpu"]
GPU_FAILURES = ("GpuOutOfMemory", "GpuError")  # what `gpu_fallback = "cpu"` answers


class NoGpuHere(PiRenderError):
    """Raised when a render must use a GPU and this host's Blender sees none (the GPUs or their
    driver went away since the submit, or this Blender does not support them): retried, as a
    driver may come back or (farm mode) another host may have one."""


@dataclass(frozen=True)
class RenderDevice:
    """The CPU (`backend` None), or GPUs of one backend: `ids` None is every one of them."""

    backend: str | None = None
    ids: tuple[str, ...] | None = None
    why: str = ""  # for the task log

    @property
    def is_gpu(self) -> bool:
        return self.backend is not None

    def spec(self) -> str:
        """What device_setup.py reads."""
        if self.backend is None:
            return json.dumps({"device": "CPU"})
        return json.dumps({"device": "GPU", "backend": self.backend,
                           "ids": list(self.ids) if self.ids is not None else None})  # fmt: skip

    def cycles_device(self) -> str | None:
        """Cycles' `--cycles-device`: it turns on every device of a type, so it is passed only
        where that is what was chosen (never for one worker's own GPU)."""
        if self.backend is None:
            return "CPU"
        return self.backend if self.ids is None else None

    def describe(self) -> str:
        if self.backend is None:
            return f"CPU ({self.why})" if self.why else "CPU"
        which = "every device" if self.ids is None else ", ".join(self.ids)
        return f"GPU {self.backend}: {which}" + (f" ({self.why})" if self.why else "")


def choose_device(setting: DeviceSetting, asked: DeviceSetting | None,
                  sees: list[GpuDevice], own: str | None, record: dict[str, Any],
                  fallback: str) -> RenderDevice:  # fmt: skip
    """The device of one attempt.

    Args:
        setting: the config's `device`; `asked`: the task's, which wins when given.
        sees: the GPUs the chosen Blender sees; `own`: the id of this worker's own GPU
            (gpu_per_worker; "" when it has none), the one it may use.
        record: the task's record (its errors say whether the attempt before failed on a GPU).
        fallback: the config's `gpu_fallback` ("cpu" or "none").

    Raises:
        NoGpuHere: a GPU is required and there is none to use.
    """
    wanted = asked or setting
    errors = record.get("errors") or []
    if fallback == "cpu" and errors and errors[-1].get("type") in GPU_FAILURES:
        return RenderDevice(why=f"the attempt before failed on the GPU: {errors[-1]['type']}; "
                                'gpu_fallback = "cpu"')  # fmt: skip
    if wanted == "cpu":
        return RenderDevice(why='device = "cpu"')
    devices = render_devices(sees)
    if own is not None:
        devices = [d for d in devices if same_gpu(d.id, own)]
    if not devices:
        if wanted == "gpu":
            raise NoGpuHere(
                'this render must use a GPU (device = "gpu"), and this host\'s '
                "Blender sees none (pi-render blenders shows what each one sees)"
            )
        return RenderDevice(why="no GPU here")  # fmt: skip
    ids = (devices[0].id,) if own is not None else None
    return RenderDevice(devices[0].backend, ids, why=f'device = "{wanted}"')
