"""The systemd side: the unit verifies and scores, sd_notify messages reach a NOTIFY_SOCKET the
test listens on, and SIGHUP reloads the config (a cron job changes) without a restart."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DaemonProcess, wait_until

UNIT = Path(__file__).parent.parent / "systemd" / "pi-render.service"
IN_CI = os.environ.get("CI", "").lower() == "true"


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if IN_CI:
        pytest.fail("CI needs systemd-analyze (Debian's systemd package)")
    pytest.skip("systemd-analyze is not installed")


def test_the_unit_verifies_and_scores_at_most_2(tmp_path: Path) -> None:
    tool = analyze()
    unit = tmp_path / "pi-render.service"  # the same unit, pointing at this checkout's CLI
    cli = Path(sys.executable).parent / "pi-render"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/pi-render", str(cli)))
    verify = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run([tool, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True)  # fmt: skip
    score = re.search(r"Overall exposure level for pi-render.service: ([\d.]+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= 2.0


def test_sd_notify_ready_watchdog_and_stopping(make_daemon: Callable[..., DaemonProcess],
                                               socket_dir: Path) -> None:  # fmt: skip
    address = socket_dir / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(30)
    daemon = make_daemon()
    os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"] = str(address), "400000"
    try:
        daemon.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    messages = [listener.recv(256).decode() for _ in range(2)]
    assert messages == ["READY=1", "WATCHDOG=1"]
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    seen = set()
    while "STOPPING=1" not in seen:
        seen.add(listener.recv(256).decode())
    assert daemon.proc.wait(60) == 0
    listener.close()


def test_sighup_reloads_cron_jobs(make_daemon: Callable[..., DaemonProcess]) -> None:
    job = '[[cron]]\nname = "{name}"\nschedule = "0 3 * * *"\ntask = "noop"\n'
    daemon = make_daemon(job.format(name="old-job")).start()
    assert "old-job" in {j["name"] for j in daemon.client.cron()}
    text = daemon.config_path.read_text().replace("old-job", "new-job")
    daemon.config_path.write_text(text)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "new-job" in {j["name"] for j in daemon.client.cron()}, what="reload")
    assert "old-job" not in {j["name"] for j in daemon.client.cron()}
    assert daemon.proc.poll() is None and daemon.client.health()["status"] == "ok"
    daemon.config_path.write_text(text.replace('"0 3 * * *"', '"not a schedule"'))
    daemon.proc.send_signal(signal.SIGHUP)  # a bad file is refused and changes nothing
    wait_until(lambda: "reload refused" in daemon.log(), what="the refusal")
    assert "new-job" in {j["name"] for j in daemon.client.cron()}
    assert json.loads(json.dumps(daemon.client.health()))["status"] == "ok"


def test_the_unit_sees_who_connects_and_gives_the_socket_a_group_of_its_own() -> None:
    settings = [line.partition("=") for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith("#")]  # fmt: skip
    values: dict[str, list[str]] = {}
    for key, _, value in settings:
        values.setdefault(key, []).append(value)
    # a private user namespace shows every connecting user as nobody: roles would mean nothing
    assert values.get("PrivateUsers", ["no"]) == ["no"]
    (group,) = values["Group"]
    (socket_group,) = values["SupplementaryGroups"]
    assert f"PI_RENDER_SOCKET_GROUP={socket_group}" in values["Environment"]
    assert socket_group != group  # members of the socket's group get nothing of the data dir


def test_a_reload_swaps_the_settings_workers_read(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    config = "[timeouts]\nnoop = 3600\n[retry.noop]\nmax_attempts = 1\n"
    daemon = make_daemon(config).start()
    text = daemon.config_path.read_text().replace("noop = 3600", "noop = 0.5")
    daemon.config_path.write_text(text + '[[cron]]\nname = "marker"\nschedule = "0 3 * * *"\n'
                                  'task = "noop"\n')  # fmt: skip
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "marker" in {j["name"] for j in daemon.client.cron()}, what="the reload")
    record = daemon.client.submit("noop", {"sleep_s": 60})
    done = daemon.client.wait(record.id, timeout=60)
    assert done.status == "failed" and done.error is not None
    assert done.error.type == "TaskTimedOut"  # the running worker read the new limit
