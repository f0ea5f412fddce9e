"""A full data disk: submits are refused cleanly (507), nothing is half-written, the daemon keeps
serving, and it carries on without a restart once space returns. The disk is a small tmpfs the
test mounts (root only) and unmounts."""

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DaemonProcess
from pi_render.api.client import ApiError

if os.geteuid() != 0:
    pytest.skip("needs root to mount a small file system", allow_module_level=True)


def test_a_full_data_disk_is_refused_cleanly_and_recovered_from(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    small = tmp_path / "full"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
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
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
