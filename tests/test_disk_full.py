"""Full disks: submits are refused cleanly (507), nothing is half-written, running work holds its
outcome until the disk takes it, a render whose output disk fills holds until it has room, no
database is corrupt, and the daemon carries on without a restart once space returns. Each disk
is a small tmpfs the test mounts (root only) and unmounts."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DaemonProcess, assert_databases_intact, fill, small_disk, wait_until

from pi_render.api.client import ApiError

if os.geteuid() != 0:
    pytest.skip("needs root to mount a small file system", allow_module_level=True)


def test_a_full_data_disk_is_refused_cleanly_and_recovered_from(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "full", "24m") as small:
        daemon = make_daemon(f"min_free_bytes = {4 << 20}\n", name="full").start()
        assert daemon.data_dir.is_relative_to(small)
        first = daemon.client.submit("noop", {"payload": 1})
        assert daemon.client.wait(first.id, 30).status == "completed"
        before = daemon.client.health()["records"]

        filler = small / "filler"
        with open(filler, "wb") as handle:  # leave about 2 MiB: under the 4 MiB floor
            handle.write(bytes(max(0, shutil.disk_usage(small).free - (2 << 20))))
        with pytest.raises(ApiError) as info:
            daemon.client.submit("noop", {"payload": 2})
        assert info.value.http_status == 507 and "free some space" in str(info.value)
        assert daemon.client.health()["records"] == before  # nothing was written
        assert daemon.client.get(first.id).status == "completed"  # and it still serves

        filler.unlink()  # space returns: no restart needed
        again = daemon.client.submit("noop", {"payload": 3})
        assert daemon.client.wait(again.id, 30).status == "completed"
        daemon.close()


def test_a_disk_that_fills_under_running_work_holds_it_until_space_returns(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "full", "24m") as disk:
        daemon = make_daemon("min_free_bytes = 0\n", name="full")  # writes are really tried
        daemon.log_path = tmp_path / "daemon.log"  # not on the disk we fill
        daemon.start()
        journal = tmp_path / "journal"
        task = daemon.client.submit("journal", {"journal": str(journal), "sleep_s": 1.0})
        wait_until(journal.exists, timeout=30, what="the task to run")
        filler = fill(disk)
        wait_until(lambda: "the data disk refuses a write" in daemon.log(), timeout=30,
                   what="the outcome write to be refused")  # fmt: skip
        with pytest.raises(ApiError) as info:
            daemon.client.submit("noop", {"payload": "refused"})
        assert info.value.http_status == 507 and "disk is full" in str(info.value)
        assert daemon.client.get(task.id).status == "running"  # held, not lost, still served

        filler.unlink()  # space returns: no restart
        done = daemon.client.wait(task.id, 60)
        assert done.status == "completed" and done.result == {"attempt": 1}
        assert journal.read_text().splitlines() == [f"{task.id} 1"]  # it ran once
        again = daemon.client.submit("noop", {"payload": "after"})
        assert daemon.client.wait(again.id, 30).status == "completed"
        health = daemon.client.health()
        assert all(w["restarts"] == 0 for w in health["workers"].values()), health["workers"]
        assert not [r for r in daemon.client.list(limit=100) if r.args.get("payload") == "refused"]
        assert daemon.terminate() == 0
        assert_databases_intact(daemon.data_dir)


def test_an_output_disk_filled_during_a_render_holds_it_until_space_returns(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, scenes: dict[str, Path]
) -> None:
    daemon = make_daemon("min_free_bytes = 0\n[workers]\nrender = 1\n").start()
    with small_disk(tmp_path / "out", "2m") as disk:
        shots = disk / "shots"
        task = daemon.client.render({"source": str(scenes["slow"]), "output_dir": str(shots)})
        wait_until(lambda: len(list(shots.glob("frame_*"))) >= 2, timeout=120,
                   what="two frames to land")  # fmt: skip
        filler = fill(disk)  # another program takes every block
        held = wait_until(lambda: (r := daemon.client.get(task.id)).paused_reason and r,
                          timeout=120, what="the render to hold")  # fmt: skip
        assert held.status == "running" and "output disk full" in (held.paused_reason or "")
        assert not [p.name for p in shots.iterdir() if not p.name.startswith("frame_")]
        kept = sorted(shots.glob("frame_*"))
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in kept)

        filler.unlink()  # space returns: it goes on where it stopped, in the same attempt
        done = daemon.client.wait(task.id, 300)
        assert done.status == "completed", done.error
        assert done.attempts == 1 and done.errors == []
        frames = (done.result or {})["frames"]
        assert [f["frame"] for f in frames] == list(range(1, 13))
        assert sorted(p.name for p in shots.iterdir()) == [Path(f["path"]).name for f in frames]
        for frame in frames:
            assert Path(frame["path"]).stat().st_size == frame["size"]
        daemon.close()
