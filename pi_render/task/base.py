"""Typed task types: `MetaTask` registers each `TaskBase[Args, Result]` subclass by type name."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from pi_render.task.output_space import FrameSize, TrialRender

from pi_render.errors import InvalidTaskArgs, UnknownTaskType
from pi_render.task import labels

ArgsT = TypeVar("ArgsT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)

_REGISTRY: dict[str, "type[TaskBase[Any, Any]]"] = {}


@dataclass(frozen=True)
class SubmitContext:
    """What a task type may use to prepare its arguments at submit (before anything is written)."""

    task_id: str
    spool: Path  # this task's private folder in the daemon's data dir
    output_root: Path  # default parent of output folders
    source_roots: tuple[Path, ...] = (Path("/"),)  # where named sources may be
    output_roots: tuple[Path, ...] = (Path("/"),)  # where named outputs may go
    reader: tuple[int, frozenset[int]] | None = None  # the submitter's uid and groups
    store: Path | None = None  # the content-addressed store snapshots link their files from
    allow_missing: bool = False  # the default when a render does not say
    max_snapshot_bytes: int = 64 << 30  # the files one render's snapshot may hold
    sandboxed: bool = True  # is Blender shut in? (if not, renders only for the daemon's uid)
    min_free_bytes: int = 0  # what the data disk must keep free (a zip unpacks into the rest)
    upload: Path | None = None  # this task's upload folder (init_new_task), if it has one
    frame_size: "FrameSize" = lambda key: None  # what a frame of a file took before (a cache)
    trial_frame: "TrialRender | None" = None  # renders a trial frame (`--check-space`)

    @property
    def privileged(self) -> bool:
        """Does the submitter see what the daemon sees (root, the daemon's user, or no caller)?"""
        return self.reader is None or self.reader[0] in (0, os.geteuid())


class MetaTask(type):
    """Reads the Args/Result models from `TaskBase[Args, Result]` and registers the class.

    A class that sets `abstract = True` in its own body is not registered.
    """

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> "MetaTask":
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if namespace.get("abstract", False):
            return cls
        for base in namespace.get("__orig_bases__", ()):
            if get_origin(base) is TaskBase:
                args_model, result_model = get_args(base)
                setattr(cls, "args_model", args_model)
                setattr(cls, "result_model", result_model)
        type_name = namespace.get("type_name")
        if not isinstance(type_name, str) or not type_name:
            raise TypeError(f"task class {name} must set a non-empty `type_name`")
        for attr in ("args_model", "result_model"):
            model = getattr(cls, attr, None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"task class {name} must subclass TaskBase[ArgsModel, ResultModel]")
        if type_name in _REGISTRY and _REGISTRY[type_name].__qualname__ != cls.__qualname__:
            raise TypeError(f"task type {type_name!r} is already registered")
        _REGISTRY[type_name] = cls  # type: ignore[assignment]
        return cls


class TaskBase(Generic[ArgsT, ResultT], metaclass=MetaTask):
    """A task type: its typed arguments, its typed result and its default routing label."""

    abstract: ClassVar[bool] = True
    type_name: ClassVar[str]
    default_label: ClassVar[str] = labels.DEFAULT
    args_model: ClassVar[type[BaseModel]]
    result_model: ClassVar[type[BaseModel]]

    @classmethod
    def parse_args(cls, raw: Any) -> ArgsT:
        """Validate raw JSON arguments at the edge.

        Raises:
            InvalidTaskArgs: naming each bad field.
        """
        try:
            parsed = cls.args_model.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(args)", "message": e["msg"]}
                for e in exc.errors()
            ]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidTaskArgs(
                f"invalid arguments for task type {cls.type_name!r}: {summary}", errors
            ) from None
        return parsed  # type: ignore[return-value]  # args_model is ArgsT by construction

    @classmethod
    def prepare(cls, args: ArgsT, ctx: SubmitContext) -> ArgsT:
        """Complete and check the arguments at submit (a render snapshots its file here).

        Raises a PiRenderError to refuse the task; nothing is recorded then.
        """
        return args

    @classmethod
    def content_key(cls, args: ArgsT) -> str | None:
        """A hash of what the task will produce, when identical submissions should be one."""
        return None

    @classmethod
    def parse_result(cls, raw: Any) -> ResultT:
        return cls.result_model.model_validate(raw)  # type: ignore[return-value]


def task_type(name: str) -> type[TaskBase[Any, Any]]:
    """The registered class for a type name.

    Raises:
        UnknownTaskType: listing the types that do exist.
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownTaskType(f"unknown task type {name!r}; known types: {known}") from None


def task_types() -> dict[str, type[TaskBase[Any, Any]]]:
    _load_builtins()
    return dict(_REGISTRY)


def _load_builtins() -> None:
    """Import the built-in task types once (they register themselves)."""
    from pi_render.task import encode_video, inspect_blend, noop, notify, render  # noqa: F401
