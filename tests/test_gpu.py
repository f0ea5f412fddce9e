"""GPUs: discovery through each Blender's own Python (real Blender here, which sees none; the fake
one, which sees two CUDA devices), one render worker per GPU each enabling only its own, a GPU
task refused where there is none, and a GPU out-of-memory failure retried on the CPU."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_BLENDER, DaemonProcess, wait_until

from pi_render.api.client import ApiError
from pi_render.config import load_settings
from pi_render.processor.blender import BlenderInstall, parse_line
from pi_render.processor.device import NoGpuHere, choose_device
from pi_render.processor.gpu import GpuDevice, GpuDiscovery, render_devices

FAKE_KEEP = '["PATH", "FAKE_BLENDER", "FAKE_BLENDER_SLEEP", "FAKE_BLENDER_GPUS", ' \
            '"FAKE_BLENDER_BARRIER"]'  # fmt: skip


def cli(daemon: DaemonProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "pi_render", *args, "--socket",
                           str(daemon.socket)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})  # fmt: skip
    assert not check or done.returncode == 0, done.stderr
    return done


def discovered(daemon: DaemonProcess) -> dict[str, Any]:
    gpus: dict[str, Any] = wait_until(
        lambda: (g := daemon.client.health()["gpus"]) and g["state"] == "done" and g,
        120, "GPU discovery to end")  # fmt: skip
    return gpus


def fake_daemon(make_daemon: Callable[..., DaemonProcess], tmp_path: Path, gpus: str,
                mode: str = "render", more: str = "", workers: str = "render = 1",
                env: dict[str, str] | None = None) -> DaemonProcess:  # fmt: skip
    config = (f'blender = "{FAKE_BLENDER}"\nblender_env_keep = {FAKE_KEEP}\nsandbox = "none"\n'
              f"{more}\n[workers]\ndefault = 1\n{workers}\n")  # fmt: skip
    extra = {"FAKE_BLENDER": mode, "FAKE_BLENDER_SLEEP": "0.05", "FAKE_BLENDER_GPUS": gpus,
             "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env or {})}  # fmt: skip
    return make_daemon(config, extra_env=extra).start()


def test_real_blender_is_asked_and_says_it_sees_no_gpu(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path]
) -> None:
    cache = tmp_path / "cache"  # empty: Blender itself is asked, not an earlier answer
    daemon = make_daemon(extra_env={"XDG_CACHE_HOME": str(cache)}).start()
    gpus = discovered(daemon)
    assert gpus["devices"] == [] and gpus["errors"] == {}
    default = daemon.client.health()["blender"]["path"]
    assert gpus["by_blender"] == {default: []}  # asked, and answered with an empty list
    (cached,) = (cache / "pi-render").glob("gpus-*.json")
    assert json.loads(cached.read_text())["devices"] == []
    listed = json.loads(cli(daemon, "blenders", "--json").stdout)
    assert listed[0]["gpus"] == [] and listed[0]["gpu_error"] is None
    assert "GPUs: none seen" in cli(daemon, "health").stdout
    assert "none" in cli(daemon, "blenders").stdout
    assert daemon.client.health()["capabilities"]["render"]["gpu"] is False
    assert "pi_render_gpu_devices{" not in daemon.client.metrics()
    # auto on a host without a GPU: Cycles is put on the CPU, and the log says why
    task = daemon.client.render({"source": str(scenes["tiny"]), "start_frame": 1,
                                 "end_frame": 1})  # fmt: skip
    assert daemon.client.wait(task.id, timeout=120).status == "completed"
    log, _ = daemon.client.log(task.id)
    assert "on CPU (no GPU here)" in log and "-- --cycles-device CPU" in log
    assert "device_setup.py" not in log  # Cycles' own flag forces the CPU: no script needed
    # a CPU attempt never reads Blender's echo of a name as a GPU failure ("Read blend: …")
    odd = tmp_path / "CUDA error: Out of memory"
    odd.mkdir()
    shutil.copy(scenes["tiny"], odd / "scene.blend")
    task = daemon.client.render({"source": str(odd / "scene.blend"), "start_frame": 1,
                                 "end_frame": 1})  # fmt: skip
    done = daemon.client.wait(task.id, timeout=120)
    assert done.status == "completed", done.error
    assert "CUDA error: Out of memory" in daemon.client.log(task.id)[0]


def test_a_gpu_task_is_refused_at_submit_on_a_host_without_one(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path]
) -> None:
    daemon = fake_daemon(make_daemon, tmp_path, gpus="")
    before = daemon.client.health()["records"]
    done = cli(daemon, "render", str(scenes["tiny"]), "--device", "gpu", check=False)
    assert done.returncode != 0 and "lacks a GPU" in done.stderr, done.stderr
    with pytest.raises(ApiError) as refused:
        daemon.client.render({"source": str(scenes["tiny"]), "requires": {"gpu": True}})
    assert refused.value.http_status == 422 and "a GPU" in str(refused.value)
    assert daemon.client.health()["records"] == before  # nothing written
    spool = daemon.data_dir / "spool"
    assert not (spool.exists() and any(spool.iterdir()))  # and no snapshot left


def test_two_gpus_two_workers_each_renders_with_only_its_own(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path]
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    daemon = fake_daemon(make_daemon, tmp_path, gpus="CUDA:2", more="chunk_size = 2",
                         workers="render = 1\ngpu_per_worker = true",
                         env={"FAKE_BLENDER_BARRIER": str(barrier)})  # fmt: skip
    gpus = discovered(daemon)
    ids = ["CUDA_FAKE_0000:00:00", "CUDA_FAKE_0000:01:00"]
    assert [d["id"] for d in gpus["devices"]] == ids
    assert daemon.client.health()["workers"]["render"]["configured"] == 2  # one per GPU
    assert daemon.client.health()["capabilities"]["render"]["gpu"] is True
    metrics = daemon.client.metrics()
    assert all(f'pi_render_gpu_devices{{backend="CUDA",id="{i}"' in metrics for i in ids)
    (host,) = json.loads(cli(daemon, "hosts", "--json").stdout)
    assert [g["id"] for g in host["gpus"]] == ids
    assert "CUDA Fake GPU 0; CUDA Fake GPU 1" in cli(daemon, "blenders").stdout
    # two chunks; each run waits at the barrier until the other runs too: two GPUs at once
    job = daemon.client.render({"source": str(scenes["long"]), "start_frame": 1,
                                "end_frame": 4, "device": "gpu"})  # fmt: skip
    assert daemon.client.wait(job.id, timeout=120).status == "completed"
    used = []
    for chunk in daemon.client.chunks(job.id):
        log, _ = daemon.client.log(chunk.id)
        argv = json.loads(next(line for line in log.splitlines()
                               if line.startswith("FAKE ARGV "))[len("FAKE ARGV "):])  # fmt: skip
        assert any(a.endswith("device_setup.py") for a in argv)  # the script that enables it
        rest = argv[argv.index("--") + 1 :]
        spec = json.loads(rest[rest.index("--pi-render-device") + 1])
        assert spec["device"] == "GPU" and spec["backend"] == "CUDA" and len(spec["ids"]) == 1
        assert "--cycles-device" not in rest  # it would turn on every CUDA device
        used += spec["ids"]
    assert sorted(used) == ids  # each worker its own GPU
    assert len(list(barrier.iterdir())) == 2


@pytest.mark.parametrize("fallback", ["cpu", "none"])
def test_gpu_out_of_memory_is_named_and_retried_on_the_cpu_where_allowed(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path],
    fallback: str,
) -> None:  # fmt: skip
    retry = "[retry.render]\nmax_attempts = 2\nbase_delay_s = 0\njitter = 0"
    daemon = fake_daemon(make_daemon, tmp_path, gpus="CUDA:1", mode="gpu-oom",
                         more=f'device = "gpu"\ngpu_fallback = "{fallback}"\n{retry}')  # fmt: skip
    task = daemon.client.render({"source": str(scenes["tiny"]), "start_frame": 1,
                                 "end_frame": 2})  # fmt: skip
    done = daemon.client.wait(task.id, timeout=120)
    assert done.errors[0].type == "GpuOutOfMemory"
    assert "System is out of GPU memory" in done.errors[0].message
    log, _ = daemon.client.log(task.id)
    first, second = log.split("=== pi-render attempt 2")
    assert "on GPU CUDA: every device" in first and "--cycles-device CUDA" in first
    if fallback == "cpu":
        assert done.status == "completed" and len(done.errors) == 1, done.error
        assert "on CPU (the attempt before failed on the GPU: GpuOutOfMemory" in second
        assert "-- --cycles-device CPU" in second and "--pi-render-device" not in second
    else:  # the GPU again, and failed for good
        assert done.status == "failed" and done.error is not None
        assert [e.type for e in done.errors] == ["GpuOutOfMemory", "GpuOutOfMemory"]
        assert "on GPU CUDA: every device" in second


def test_cycles_gpu_messages_are_told_apart_from_other_errors() -> None:
    oom = ["Error: System is out of GPU memory", "System is out of GPU and shared host memory",
           "CUDA_ERROR_OUT_OF_MEMORY in cuMemAlloc_v2(&device_pointer, size) (device_impl.cpp:86)",
           "hipErrorOutOfMemory in hipMalloc"]  # fmt: skip
    other = ["CUDA error: an illegal memory access was encountered in cuCtxSynchronize()",
             "OPTIX_ERROR_LAUNCH_FAILURE in optixLaunch", "Failed to create CUDA context (Illegal "
             "address)"]  # fmt: skip
    for line in [*oom, *other]:
        event = parse_line(line)
        assert event is not None and event.kind == "gpu_error", line
    plain = parse_line("Error: Cannot read file '/x.blend'")
    assert plain is not None and plain.kind == "error"


def test_the_device_of_an_attempt() -> None:
    two = [GpuDevice(backend="CUDA", name="A", id="c1"), GpuDevice(backend="OPTIX", name="A",
           id="o1"), GpuDevice(backend="OPTIX", name="B", id="o0")]  # fmt: skip
    assert [d.id for d in render_devices(two)] == ["o0", "o1"]  # OptiX before CUDA
    auto = choose_device("auto", None, two, None, {}, "cpu")
    assert (auto.backend, auto.ids, auto.cycles_device()) == ("OPTIX", None, "OPTIX")
    mine = choose_device("auto", None, two, "o1", {}, "cpu")
    assert (mine.ids, mine.cycles_device()) == (("o1",), None)
    assert not choose_device("auto", None, two, "", {}, "cpu").is_gpu  # a worker without one
    cuda_only = [GpuDevice(backend="CUDA", name="A", id="CUDA_A_0000:01:00")]
    theirs = choose_device("auto", None, cuda_only, "OPTIX_A_0000:01:00", {}, "cpu")
    assert theirs.ids == ("CUDA_A_0000:01:00",)  # one card, seen through another back end
    assert not choose_device("gpu", "cpu", two, None, {}, "cpu").is_gpu  # the task's wins
    assert not choose_device("auto", None, [], None, {}, "cpu").is_gpu
    failed = {"errors": [{"type": "GpuError", "message": "x"}]}
    assert not choose_device("gpu", None, two, None, failed, "cpu").is_gpu
    assert choose_device("gpu", None, two, None, failed, "none").is_gpu
    with pytest.raises(NoGpuHere):
        choose_device("gpu", None, [], None, {}, "cpu")
    with pytest.raises(NoGpuHere):
        choose_device("auto", "gpu", two, "c9", {}, "cpu")  # this Blender lacks the worker's


def test_discovery_is_cached_per_build_and_environment(tmp_path: Path) -> None:
    blender = tmp_path / "blender"
    blender.write_text("#!/bin/sh\n")
    install = BlenderInstall("executable", str(blender), "4.2.0")
    asked: list[str] = []

    def ask(found: BlenderInstall) -> list[GpuDevice]:
        asked.append(found.path)
        return [GpuDevice(backend="HIP", name="R", id="h0")]

    def discover(salt: str = "") -> list[GpuDevice]:
        discovery = GpuDiscovery([install], tmp_path / "cache", ask, salt)
        discovery.start()
        assert discovery.wait(30)
        return discovery.devices(install)

    assert discover() == discover() == [GpuDevice(backend="HIP", name="R", id="h0")]
    assert len(asked) == 1  # the second start read the cache
    discover("CUDA_VISIBLE_DEVICES=1")
    assert len(asked) == 2  # what Blender is shown changed: asked again
    blender.write_text("#!/bin/sh\n# a new build\n")
    discover()
    assert len(asked) == 3
    for cached in (tmp_path / "cache").glob("gpus-*.json"):
        cached.write_text("{not json")
    discover()
    assert len(asked) == 4  # an unreadable cache is asked past, not believed


def test_gpu_per_worker_is_read_from_the_workers_table(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('device = "gpu"\n[workers]\nrender = 1\ngpu_per_worker = true\n')
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert settings.gpu_per_worker and settings.workers == {"render": 1}
    assert settings.device == "gpu" and settings.gpu_fallback == "cpu"
