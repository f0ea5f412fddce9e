"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
daemon and a real `pi-render web` process. CI installs chromium; there a missing one fails."""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DaemonProcess, start_fake_renderer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "docs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must provide chromium (apt package chromium; see scripts/setup.sh)")
        pytest.skip("chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage"])  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture
def dashboard(make_daemon: Callable[..., DaemonProcess]) -> Iterator[tuple[DaemonProcess, str]]:
    daemon = start_fake_renderer(make_daemon, 0.4)
    bind = f"127.0.0.1:{free_port()}"
    web = subprocess.Popen([sys.executable, "-m", "pi_render", "web", "--bind", bind,
                            "--socket", str(daemon.socket), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert web.stdout is not None
        text = ""
        while not text.rstrip().endswith("}"):  # `--json` prints one object, then serves
            line = web.stdout.readline()
            assert line, "pi-render web exited before printing its link"
            text += line
        link = json.loads(text)["url"]
        yield daemon, link
    finally:
        web.terminate()
        web.wait(30)


def test_log_in_upload_watch_every_thumbnail_land_and_cancel(
    browser: Any, dashboard: tuple[DaemonProcess, str], scenes: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    daemon, link = dashboard
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(link)  # the one-time link: it sets the cookie and lands on the tasks page
    assert page.url.endswith("/") and page.locator("table#tasks").count() == 1
    page.goto(link.split("/login")[0] + "/submit")
    page.set_input_files("input[type=file]", str(scenes["tiny"]))
    page.click("button[type=submit]")
    assert "1-3" in page.content()  # inspect read the scene's frames before submitting
    page.click("button[type=submit]")
    page.wait_for_url("**/tasks/*")
    page.wait_for_function("document.getElementById('status').textContent === 'completed'")
    page.wait_for_function(
        "[...document.querySelectorAll('.grid img')].length === 3 && "
        "[...document.querySelectorAll('.grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    width = page.eval_on_selector("main > .bar span", "e => e.style.width")
    assert width == "100%" or width.startswith("100")
    shot = tmp_path / "task-page.png"  # the test's artifact
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("PI_RENDER_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, ARTIFACTS / "dashboard-task.png")  # the README's screenshot
    second = daemon.client.render({"source": str(scenes["tiny"]), "force": True})
    page.goto(link.split("/login")[0] + f"/tasks/{second.id}")
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'")
    assert daemon.client.wait(second.id, 30).status == "cancelled"
    forged = page.evaluate(
        f"fetch('/tasks/{second.id}/retry', {{method: 'POST'}}).then(r => r.status)"
    )
    assert forged == 403  # a POST without the CSRF token


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_local_user_cannot_use_the_dashboard_even_with_its_link(
    dashboard: tuple[DaemonProcess, str],
) -> None:
    import pwd

    _, link = dashboard
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    theirs = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", link],
                            capture_output=True, text=True, timeout=30,
                            preexec_fn=drop)  # fmt: skip
    assert theirs.stdout == "403"  # refused by the uid of its socket, token or not
    mine = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", link],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert mine.stdout == "303"  # the link was not spent by the refused request


def test_a_metrics_token_file_keeps_the_scrape_token_across_restarts(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon().start()
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-prometheus\n")
    argv = [
        sys.executable,
        "-m",
        "pi_render",
        "web",
        "--bind",
        f"127.0.0.1:{free_port()}",
        "--socket",
        str(daemon.socket),
        "--metrics-token-file",
        str(token),
        "--json",
    ]
    token.chmod(0o644)
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "chmod 0600" in refused.stderr + refused.stdout
    token.chmod(0o600)
    web = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert web.stdout is not None
        text = ""
        while not text.rstrip().endswith("}"):
            text += web.stdout.readline()
        printed = json.loads(text)
        assert printed["metrics_token"] == "s3cret-token-for-prometheus"
        with httpx.Client(base_url=f"http://{printed['bind']}") as client:
            answer = client.get("/metrics", headers={"Authorization": f"Bearer "
                                                     f"{printed['metrics_token']}"})  # fmt: skip
            assert answer.status_code == 200 and "pi_render_build_info" in answer.text
    finally:
        web.terminate()
        web.wait(30)
