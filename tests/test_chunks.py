"""Render jobs in chunks on one host (the embedded SQLite default): two render workers share a
job's chunks, every frame lands once, and cancelling the job stops its running chunks."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from conftest import DaemonProcess, wait_until

from pi_render.farm.paths import to_farm, to_local
from pi_render.service.jobs import MAX_CHUNKS, split
from pi_render.task.record import TaskRecord

FAKE = Path(__file__).parent / "fakes" / "fake_blender.py"


def start(make_daemon: Callable[..., DaemonProcess], sleep: float) -> DaemonProcess:
    config = (
        f'blender = "{FAKE}"\nblender_env_keep = ["PATH", "FAKE_BLENDER", '
        f'"FAKE_BLENDER_SLEEP"]\nchunk_size = 4\n[workers]\ndefault = 1\nrender = 2\n'
    )
    env = {"FAKE_BLENDER": "render", "FAKE_BLENDER_SLEEP": str(sleep)}
    return make_daemon(config, extra_env=env).start()


def test_two_render_workers_share_a_jobs_chunks_on_one_host(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = start(make_daemon, 0.05)
    job = daemon.client.render({"source": str(scenes["long"])})  # chunk_size from the config
    assert job.chunks == 5
    done = daemon.client.wait(job.id, timeout=120)
    assert done.status == "completed", done.error
    frames = (done.result or {})["frames"]
    assert [f["frame"] for f in frames] == list(range(1, 21))
    assert all(Path(f["path"]).is_file() and f["host"] is None for f in frames)
    chunks = daemon.client.chunks(job.id)
    assert {c.worker for c in chunks} == {"render-0", "render-1"}
    assert (done.progress_detail or {})["frames_done"] == 20 and done.progress == 1.0
    cli = [sys.executable, "-m", "pi_render", "--socket", str(daemon.socket)]
    listed = json.loads(run([*cli[:3], "chunks", job.id, "--json", *cli[3:]]))
    assert [c["id"] for c in listed] == [c.id for c in chunks]
    (host,) = json.loads(run([*cli[:3], "hosts", "--json", *cli[3:]]))
    assert host["name"] == "local" and host["state"] == "online" and host["running"] == []
    shown = run([*cli[:3], "status", job.id, *cli[3:]])
    assert all(c.id in shown for c in chunks)  # the job, then each of its chunks


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={
        **os.environ, "COLUMNS": "200"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cancelling_a_job_cancels_its_chunks_running_or_waiting(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = start(make_daemon, 0.5)
    job = daemon.client.render({"source": str(scenes["long"])})
    wait_until(lambda: daemon.client.get(job.id).status == "running", 60, "the job to start")
    daemon.client.cancel(job.id)
    assert daemon.client.wait(job.id, timeout=30).status == "cancelled"
    chunks = wait_until(lambda: [c for c in daemon.client.chunks(job.id)]
                        if all(c.status == "cancelled" for c in daemon.client.chunks(job.id))
                        else None, 30, "every chunk to be cancelled")  # fmt: skip
    assert len(chunks) == 5
    wait_until(lambda: daemon.client.health()["running"] == 0, 30, "every Blender to stop")


def test_path_maps_swap_whole_components_both_ways() -> None:
    farm_map = {"/mnt/nas/pi": "/Volumes/farm"}
    assert to_local("/mnt/nas/pi/spool/x.blend", farm_map) == "/Volumes/farm/spool/x.blend"
    assert to_local("/mnt/nas/pix/x.blend", farm_map) == "/mnt/nas/pix/x.blend"
    assert to_farm("/Volumes/farm/output/1.png", farm_map) == "/mnt/nas/pi/output/1.png"
    assert to_farm("/elsewhere/1.png", farm_map) == "/elsewhere/1.png"


def job_over(first: int, last: int, **more: object) -> TaskRecord:
    """A render job's record over frames `first`..`last` (what `split` reads of it)."""
    args = {"start_frame": first, "end_frame": last, "frame_step": 1, **more}
    return TaskRecord(id="j", type="render", label="render",
                      created_at=datetime.now(timezone.utc), args=args)  # fmt: skip


def numbered() -> Callable[[], str]:
    ids = iter(range(10**6))
    return lambda: f"c{next(ids)}"


def test_a_job_is_never_split_into_more_than_a_thousand_chunks() -> None:
    chunks = split(job_over(1, 100_000), 1, numbered())
    assert len(chunks) == MAX_CHUNKS
    assert chunks[0].args["start_frame"] == 1 and chunks[-1].args["end_frame"] == 100_000
    assert sum(c.args["end_frame"] - c.args["start_frame"] + 1 for c in chunks) == 100_000
    assert split(job_over(1, 100, output_type="FFMPEG"), 5, numbered()) == []  # a video: whole


def test_a_huge_frame_range_is_split_by_arithmetic_not_by_listing_it() -> None:
    started = time.monotonic()
    chunks = split(job_over(0, 2**31 - 2), 1, numbered())
    assert len(chunks) == MAX_CHUNKS and chunks[-1].args["end_frame"] == 2**31 - 2
    assert time.monotonic() - started < 5  # a list of 2^31 frames would take minutes and GBs
