"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
daemon and a real `pi-render web` process. CI installs chromium; there a missing one fails."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DaemonProcess, start_fake_renderer, wait_until

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "docs"


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


@contextmanager
def dashboard_of(daemon: DaemonProcess, as_nobody: bool = False,
                 host: str = "127.0.0.1") -> Iterator[str]:  # fmt: skip
    """A real `pi-render web` for `daemon`; yields its one-time login link. `as_nobody`: run
    it as that user (Debian's python3 over this venv's packages, since the venv's interpreter
    may live under a private home), a bind mount lending it this checkout wherever it is."""
    bind = f"{host}:{free_port()}"
    argv = ["-m", "pi_render", "web", "--bind", bind, "--socket", str(daemon.socket), "--json"]
    if as_nobody:
        lent = Path(tempfile.mkdtemp(prefix="pr-repo-"))
        lent.chmod(0o755)
        site = Path(sysconfig.get_paths()["purelib"]).relative_to(REPO)
        path = f"{lent}:{lent / site}"
        command = (f"mount --bind {shlex.quote(str(REPO))} {shlex.quote(str(lent))} && exec "
                   f"setpriv --reuid=nobody --regid=nogroup --clear-groups env PYTHONPATH={path}"
                   f" /usr/bin/python3 {shlex.join(argv)}")  # fmt: skip
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
    else:
        argv = [sys.executable, *argv]
    web = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd="/")  # fmt: skip
    try:
        assert web.stdout is not None
        text = ""
        while not text.rstrip().endswith("}"):  # `--json` prints one object, then serves
            line = web.stdout.readline()
            assert line, f"pi-render web exited before printing its link:\n{text}"
            text += line
        yield json.loads(text[text.index("{") :])["url"]
    finally:
        web.terminate()
        web.wait(30)


@pytest.fixture
def dashboard(make_daemon: Callable[..., DaemonProcess]) -> Iterator[tuple[DaemonProcess, str]]:
    daemon = start_fake_renderer(make_daemon, mode="hang")  # a render runs until cancelled
    with dashboard_of(daemon) as link:
        yield daemon, link


def test_log_in_upload_a_scene_and_watch_real_blender_fill_in_every_thumbnail(
    browser: Any, make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    daemon = make_daemon().start()  # real Blender
    with dashboard_of(daemon) as link:
        page = browser.new_page()
        page.set_default_timeout(120_000)
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
            "[...document.querySelectorAll('.grid img')].every(i => i.complete && "
            "i.naturalWidth > 0)"
        )
        width = page.eval_on_selector("main > .bar span", "e => e.style.width")
        assert width.startswith("100")
        page.wait_for_function("document.getElementById('log').textContent.includes('Saved')")
        shot = tmp_path / "task-page.png"  # the test's artifact
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("PI_RENDER_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, ARTIFACTS / "dashboard-task.png")  # the README's screenshot


def test_cancel_a_render_from_its_page_and_a_post_without_the_csrf_token_is_refused(
    browser: Any, dashboard: tuple[DaemonProcess, str], scenes: dict[str, Path]
) -> None:
    daemon, link = dashboard
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(link)
    running = daemon.client.render({"source": str(scenes["tiny"])})
    wait_until(lambda: daemon.client.get(running.id).status == "running", 30, "the render")
    page.goto(link.split("/login")[0] + f"/tasks/{running.id}")
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'")
    assert daemon.client.wait(running.id, 30).status == "cancelled"
    forged = page.evaluate(
        f"fetch('/tasks/{running.id}/retry', {{method: 'POST'}}).then(r => r.status)"
    )
    assert forged == 403  # a POST without the CSRF token
    assert daemon.client.get(running.id).status == "cancelled"
    page.click("#logout")
    assert page.evaluate("fetch('/').then(r => r.status)") == 401  # the session has ended


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_viewers_dashboard_has_no_buttons_that_change_things(
    browser: Any, make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    from test_access import open_socket_to_nobody

    daemon = start_fake_renderer(make_daemon, mode="hang",
                                 tables='[roles.viewer]\nusers = ["nobody"]\n')  # fmt: skip
    open_socket_to_nobody(daemon)
    running = daemon.client.render({"source": str(scenes["tiny"])})
    with dashboard_of(daemon, as_nobody=True) as link:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(link)
        assert "viewer" in page.inner_text("nav .who")
        page.goto(link.split("/login")[0] + f"/tasks/{running.id}")
        assert page.inner_text("h1") and page.locator("#status").count() == 1
        assert page.locator("main form, main button, #cancel").count() == 0
        refused = page.evaluate(
            f"fetch('/tasks/{running.id}/cancel?csrf=' + "
            f"document.querySelector('meta[name=csrf]').content, {{method: 'POST'}})"
            f".then(r => r.status)"
        )
        assert refused == 403  # the daemon refuses a viewer, whatever the page shows
    assert daemon.client.get(running.id).status == "running"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_local_user_cannot_use_the_dashboard_even_with_its_link_or_cookie(
    dashboard: tuple[DaemonProcess, str],
) -> None:
    import pwd

    daemon, link = dashboard
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    def curl(*args: str, as_nobody: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
                              capture_output=True, text=True, timeout=30,
                              preexec_fn=drop if as_nobody else None)  # fmt: skip

    theirs = curl(link)
    assert theirs.stdout == "000" and theirs.returncode != 0  # closed as it was accepted
    login = curl("-D", "-", link, as_nobody=False)  # the owner logs in
    assert login.stdout.endswith("303")
    cookie = login.stdout.split("pi_render_session=")[1].split(";")[0]
    base = link.split("/login")[0]
    for source in ("127.0.0.1", "127.0.0.2"):  # any address of 127/8: still their socket
        stolen = curl("--interface", source, "-b", f"pi_render_session={cookie}", base + "/")
        assert stolen.stdout == "000", source
    tossed = curl("-b", f"pi_render_session=bogus; pi_render_session={cookie}", base + "/",
                  as_nobody=False)  # fmt: skip
    assert tossed.stdout == "200"  # a cookie of the same name set beside it logs nobody out
    with dashboard_of(daemon, host="0.0.0.0") as everywhere:  # bound off loopback on purpose
        port = everywhere.split(":")[2].split("/")[0]
        for source in ("127.0.0.1", "127.0.0.2"):  # still this host: still refused
            assert curl("--interface", source, f"http://127.0.0.1:{port}/").stdout == "000"
        mine = curl(f"http://127.0.0.1:{port}/", as_nobody=False)
        assert mine.stdout == "401"  # the owner's connection reaches the guard


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
            first = printed["url"].replace(f"http://{printed['bind']}", "")
            assert client.get(first).status_code == 303
            assert client.get(first).status_code == 403  # spent
            web.send_signal(signal.SIGUSR1)  # "a fresh link, please"
            text = ""
            while not text.rstrip().endswith("}"):
                text += web.stdout.readline()
            again = json.loads(text)
            assert again["pid"] == web.pid and again["url"] != printed["url"]
            client.cookies.clear()
            assert client.get(again["url"].replace(f"http://{again['bind']}", "")
                              ).status_code == 303  # fmt: skip
            assert client.get("/").status_code == 200
            for _ in range(300):  # a burst: each handler only writes a byte (no lock, no I/O)
                web.send_signal(signal.SIGUSR1)
            assert client.get("/static/style.css", timeout=30).status_code == 200
    finally:
        web.terminate()
        web.wait(30)
