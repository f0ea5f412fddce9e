"""Processors do a task's work; `run()` validates around the subclass's `_process()`."""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from pi_render.errors import PiRenderError
from pi_render.processor.context import TaskContext
from pi_render.task.base import ArgsT, ResultT, TaskBase

if TYPE_CHECKING:
    from pi_render.config import Settings
    from pi_render.manifest.frames import FrameStore
    from pi_render.processor.blender import BlenderInstall
    from pi_render.processor.gpu import GpuDiscovery
    from pi_render.processor.sandbox import Sandbox

_PROCESSORS: dict[str, "type[Processor[Any, Any]]"] = {}


class NoProcessor(PiRenderError):
    """Raised when a task type has no processor registered in this daemon."""

    retryable = False


@dataclass
class ProcessorEnv:
    """What processors may use of the daemon: settings, Blender, the frame ledger, folders."""

    settings: "Settings"
    blender: "BlenderInstall | None"
    frames: "FrameStore"
    sandbox: "Sandbox | None" = None  # None: Blender runs bare
    host: str | None = None  # farm mode: this host's name (frames and errors carry it)
    # a frame landed: (the ledger key: the task, or its job; frame; seconds it took)
    on_frame: Callable[[str, int, float | None], None] = lambda key, frame, seconds: None
    blenders: "list[BlenderInstall]" = field(default_factory=list)  # every one; `blender` first
    gpus: "GpuDiscovery | None" = None  # the GPUs each Blender sees (None: not asked)

    def versions(self) -> list[str]:
        """The versions of this host's Blenders (what a file's version is checked against)."""
        return [b.version for b in self.blenders if b.version]

    @property
    def logs(self) -> Path:
        return self.settings.paths.logs

    def log_of(self, task_id: str) -> Path:
        return self.settings.paths.log_of(task_id)

    def spool(self, task_id: str) -> Path:
        return self.settings.paths.spool_of(task_id)

    def work(self, task_id: str) -> Path:
        """Where a render's Blender writes and its pid file lives: the task's spool on one
        host; in farm mode this host's data dir, so two hosts that ran one chunk (a takeover)
        never share a partial folder or a pid file."""
        return self.settings.paths.work_of(task_id)

    def local(self, path: str) -> str:
        """A path the farm recorded, as this host mounts it (`[farm.path_map]`)."""
        farm = self.settings.farm
        if farm is None or not farm.path_map:
            return path
        from pi_render.farm.paths import to_local

        return to_local(path, farm.path_map)

    def farm_form(self, path: str) -> str:
        """This host's path as the farm records it."""
        farm = self.settings.farm
        if farm is None or not farm.path_map:
            return path
        from pi_render.farm.paths import to_farm

        return to_farm(path, farm.path_map)


class Processor(ABC, Generic[ArgsT, ResultT]):
    """Does the work of one task type; knows nothing of queues or records.

    Subclasses set `task` to their task class and are registered for its type name.
    """

    task: ClassVar[type[TaskBase[Any, Any]]]
    # a run leaves nothing but its result (no file, no message): its start need not be fsynced,
    # since a power cut that loses the start loses every trace of the run with it
    pure: ClassVar[bool] = False

    def __init__(self, env: ProcessorEnv | None = None) -> None:
        self.env = env

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "task" in cls.__dict__:
            _PROCESSORS[cls.task.type_name] = cls

    def run(self, raw_args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Parse the stored arguments, do the work, and return the validated result as JSON."""
        args = self.task.parse_args(raw_args)
        result = self._process(args, ctx)
        return self.task.result_model.model_validate(result).model_dump(mode="json")

    @abstractmethod
    def _process(self, args: ArgsT, ctx: TaskContext) -> ResultT:
        """The work itself; raise TaskStopped when `ctx` asks to stop."""


def is_pure(type_name: str) -> bool:
    """Whether a task type's runs leave nothing behind but their records (Processor.pure)."""
    found = _PROCESSORS.get(type_name)
    return found is not None and found.pure


def processor_for(type_name: str, env: ProcessorEnv | None = None) -> Processor[Any, Any]:
    """A fresh processor for a task type.

    Raises:
        NoProcessor: when none is registered.
    """
    try:
        return _PROCESSORS[type_name](env)
    except KeyError:
        raise NoProcessor(f"no processor is registered for task type {type_name!r}") from None
