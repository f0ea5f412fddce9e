"""MetaTask: typed args and results read from the generic, registration by type name, JSON codec."""

from typing import Any

import pytest
from pydantic import BaseModel

from pi_render.errors import InvalidTaskArgs, UnknownTaskType
from pi_render.processor.base import NoProcessor, processor_for
from pi_render.processor.context import StopReason, TaskContext, TaskStopped
from pi_render.task import labels, task_type, task_types
from pi_render.task.base import TaskBase
from pi_render.task.noop import NoopArgs, NoopResult, NoopTask


class EchoArgs(BaseModel):
    text: str


class EchoResult(BaseModel):
    text: str


def test_noop_is_registered_with_its_models_and_label() -> None:
    assert task_type("noop") is NoopTask
    assert NoopTask.args_model is NoopArgs and NoopTask.result_model is NoopResult
    assert NoopTask.default_label == labels.DEFAULT
    assert "noop" in task_types()


def test_a_new_task_class_registers_itself() -> None:
    class EchoTask(TaskBase[EchoArgs, EchoResult]):
        type_name = "test-echo"
        default_label = "custom"

    assert task_type("test-echo") is EchoTask
    assert EchoTask.parse_args({"text": "hi"}) == EchoArgs(text="hi")


def test_task_classes_must_be_complete() -> None:
    with pytest.raises(TypeError, match="type_name"):

        class Nameless(TaskBase[EchoArgs, EchoResult]):
            pass

    with pytest.raises(TypeError, match="TaskBase\\[ArgsModel, ResultModel\\]"):

        class Untyped(TaskBase):  # type: ignore[type-arg]
            type_name = "test-untyped"

    with pytest.raises(TypeError, match="already registered"):

        class Clash(TaskBase[EchoArgs, EchoResult]):
            type_name = "noop"


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTaskType, match="known types: .*noop"):
        task_type("nope")


def test_invalid_args_name_the_field() -> None:
    with pytest.raises(InvalidTaskArgs) as info:
        NoopTask.parse_args({"sleep_s": "later"})
    assert info.value.errors[0]["field"] == "sleep_s"


def run_noop(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return processor_for("noop").run(args, ctx)


def test_noop_processor_echoes_and_its_sleep_is_cancellable() -> None:
    progress: list[float] = []
    ctx = TaskContext("t", 1, lambda f, m, d: progress.append(f))
    assert run_noop({"payload": {"a": [1]}}, ctx) == {"payload": {"a": [1]}}

    ctx = TaskContext("t", 1, lambda f, m, d: progress.append(f))
    ctx.request_stop(StopReason.CANCEL)
    with pytest.raises(TaskStopped) as info:
        run_noop({"sleep_s": 3600}, ctx)  # returns at once: the stop is already set
    assert info.value.reason is StopReason.CANCEL


def test_missing_processor_is_a_clear_error() -> None:
    with pytest.raises(NoProcessor, match="no processor is registered"):
        processor_for("test-echo-without-processor")
