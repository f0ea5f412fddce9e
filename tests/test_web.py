"""The dashboard through its app (a real daemon behind it, over its real socket): the guard
(Host, Origin, one-time login, CSRF, bearer token), the pages, thumbnails served only from a
task's own folder, and upload → inspect → render."""

import io
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, start_fake_renderer, wait_until
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pi_render.api.events import EventLog
from pi_render.web.app import create_web_app
from pi_render.web.guard import Guard, Sessions
from pi_render.web.peer import allowed, diag_lookup, table_lookup
from pi_render.web.serve import follow_daemon
from pi_render.web.thumbs import FrameRefused, open_frame


@pytest.fixture
def renderer(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return start_fake_renderer(make_daemon, 0.02)


@pytest.fixture
def web(renderer: DaemonProcess) -> Iterator[tuple[TestClient, Sessions]]:
    sessions = Sessions()
    app = create_web_app(renderer.socket, {"testserver"}, sessions, EventLog())
    with TestClient(app, follow_redirects=False) as client:
        yield client, sessions


def logged_in(web: tuple[TestClient, Sessions]) -> tuple[TestClient, str]:
    client, sessions = web
    answer = client.get(f"/login?token={sessions.login_token}")
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/")
    assert page.status_code == 200
    found = re.search(r'name="csrf" content="([^"]+)"', page.text)
    assert found is not None
    return client, found.group(1)


def test_a_session_ends_at_logout_or_after_its_lifetime_and_a_fresh_link_logs_in_again(
    renderer: DaemonProcess,
) -> None:
    now = [1000.0]
    sessions = Sessions(lifetime_s=3600, clock=lambda: now[0])
    app = create_web_app(renderer.socket, {"testserver"}, sessions, EventLog())
    with TestClient(app, follow_redirects=False) as client:
        login = client.get(f"/login?token={sessions.login_token}")
        assert login.status_code == 303 and "Max-Age=3600" in login.headers["set-cookie"]
        first = re.search(r'name="csrf" content="([^"]+)"', client.get("/").text)
        assert first is not None
        now[0] += 3599
        assert client.get("/").status_code == 200
        now[0] += 1  # the session's hour is up
        ended = client.get("/")
        assert ended.status_code == 401 and "kill -USR1" in ended.text
        client.cookies.clear()
        assert client.get(f"/login?token={sessions.new_login_token()}").status_code == 303
        page = client.get("/")
        assert page.status_code == 200 and 'id="logout"' in page.text
        fresh = re.search(r'name="csrf" content="([^"]+)"', page.text)
        assert fresh is not None and fresh.group(1) != first.group(
            1
        )  # a new session, a new CSRF token
        assert client.post("/logout").status_code == 403  # logging out needs the CSRF token too
        out = client.post(f"/logout?csrf={fresh.group(1)}")
        assert out.status_code == 200 and 'pi_render_session=""' in out.headers["set-cookie"]
        client.cookies.clear()
        client.cookies.set("pi_render_session", page.request.headers["cookie"].split("=", 1)[1])
        assert client.get("/").status_code == 401  # the old cookie is dead on the server too


def test_the_guard_refuses_strangers_rebinding_foreign_origins_and_forged_posts(
    web: tuple[TestClient, Sessions], renderer: DaemonProcess
) -> None:
    client, sessions = web
    token = sessions.login_token
    assert client.get("/").status_code == 401  # no session
    assert client.get(f"/login?token={token}", headers={"Host": "evil.example:8765"}
                      ).status_code == 421  # DNS rebinding: not our address  # fmt: skip
    assert client.get("/login?token=%C3%A9").status_code == 403
    client, csrf = logged_in(web)
    assert client.get(f"/login?token={token}").status_code == 403  # the link works once
    record = renderer.client.submit("noop", {})
    assert client.post(f"/tasks/{record.id}/cancel").status_code == 403  # no CSRF token
    assert client.post(f"/tasks/{record.id}/cancel?csrf=wrong").status_code == 403
    assert client.post(f"/tasks/{record.id}/cancel?csrf=%C3%A9").status_code == 403  # non-ASCII
    assert client.get("/", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/metrics").status_code == 401  # scrapers need the bearer token
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer "
                                              f"{sessions.metrics_token}"})  # fmt: skip
    names = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert "pi_render_tasks_submitted" in names


def test_pages_show_a_render_its_thumbnails_and_buttons_that_work(
    web: tuple[TestClient, Sessions], renderer: DaemonProcess, scenes: dict[str, Path]
) -> None:
    client, csrf = logged_in(web)
    done = renderer.client.wait(renderer.client.render({"source": str(scenes["tiny"])}).id, 60)
    assert done.status == "completed"
    listing = client.get("/?status=completed")
    assert done.id in listing.text
    page = client.get(f"/tasks/{done.id}")
    assert page.status_code == 200 and 'id="cancel"' in page.text  # admin: its buttons
    for frame in (1, 2, 3):
        thumb = client.get(f"/tasks/{done.id}/frames/{frame}.jpg")
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"  # a JPEG
        full = client.get(f"/tasks/{done.id}/frames/{frame}")
        assert full.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/tasks/{done.id}/frames/99.jpg").status_code == 404
    renderer.client.pause("default", label=True)  # so the next task waits to be cancelled
    pending = renderer.client.submit("noop", {})
    cancelled = client.post(f"/tasks/{pending.id}/cancel?csrf={csrf}")
    assert cancelled.status_code == 303
    assert renderer.client.wait(pending.id, 30).status == "cancelled"
    for path in ("/health", "/cron", "/failed", "/submit"):
        assert client.get(path).status_code == 200, path


def test_a_viewer_sees_no_buttons_that_change_things(renderer: DaemonProcess) -> None:
    from jinja2 import Environment, FileSystemLoader

    import pi_render.web.app as web_app

    record = renderer.client.submit("noop", {})
    env = Environment(loader=FileSystemLoader(web_app.HERE / "templates"), autoescape=True)
    html = env.get_template("task.html").render(
        csrf="x", me={"uid": 1000, "role": "viewer"}, task=record, chunks=[], frames=[], log=""
    )
    main = html.split("<main>")[1].lower()  # the nav's only form is "Log out"
    assert "<form" not in main and "cancel" not in main


def test_frames_are_served_only_from_inside_their_tasks_folder(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    (folder / "frame_0001.png").symlink_to(tmp_path / "secret.png")
    (folder / "frame_0002.png").write_bytes(b"\x89PNG")
    with pytest.raises(FrameRefused):
        open_frame(str(folder), str(folder / "frame_0001.png"))  # a link that leads out
    with pytest.raises(FrameRefused):
        open_frame(str(folder), str(tmp_path / "secret.png"))  # not in the folder
    with pytest.raises(FrameRefused):
        open_frame(str(folder), "/dev/zero")
    fd, _ = open_frame(str(folder), str(folder / "frame_0002.png"))
    os.close(fd)
    os.link(folder / "frame_0002.png", folder / "frame_0003.png")
    with pytest.raises(FrameRefused):  # a second name: maybe a file only the dashboard may read
        open_frame(str(folder), str(folder / "frame_0003.png"))
    (folder / "frame_0003.png").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "frame_0002.png").write_bytes(b"secret")
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere)  # an output folder swapped for a link
    with pytest.raises(FrameRefused):
        open_frame(str(linked), str(linked / "frame_0002.png"))


def test_upload_inspect_then_render(
    web: tuple[TestClient, Sessions], renderer: DaemonProcess, scenes: dict[str, Path]
) -> None:
    client, csrf = logged_in(web)
    with open(scenes["tiny"], "rb") as blend:
        shown = client.post(f"/submit?csrf={csrf}", files={"file": ("tiny.blend", blend)})
    assert shown.status_code == 200 and "1-3" in shown.text  # what inspect read from it
    action = re.search(r'action="(/submit/[^"?]+)\?csrf=', shown.text)
    assert action is not None
    started = client.post(f"{action.group(1)}?csrf={csrf}",
                          data={"frames": "2-3", "priority": "high"})  # fmt: skip
    assert started.status_code == 303
    task_id = started.headers["location"].rsplit("/", 1)[1]
    done = renderer.client.wait(task_id, 60)
    assert done.status == "completed"
    assert [f["frame"] for f in (done.result or {})["frames"]] == [2, 3]


def test_the_web_process_follows_the_daemons_events(renderer: DaemonProcess) -> None:
    events, stop = EventLog(), threading.Event()
    thread = threading.Thread(target=follow_daemon, args=(renderer.socket, events, stop),
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        wait_until(lambda: renderer.client.submit("noop", {}) and events.last > 0, 30,
                   "events to arrive from the daemon")  # fmt: skip
        seen, _ = events.after(0)
        assert any(kind == "task" for _, kind, _ in seen)
    finally:
        stop.set()


def test_thumbnails_refuse_decompression_bombs_and_stay_small(tmp_path: Path) -> None:
    from PIL import Image

    from pi_render.web.thumbs import Thumbnails

    folder = tmp_path / "out"
    folder.mkdir()
    Image.new("1", (12_000, 12_000)).save(folder / "frame_0001.png")  # 144 MP, a small file
    assert (folder / "frame_0001.png").stat().st_size < 1 << 20
    with pytest.raises(FrameRefused, match="too many pixels"):
        Thumbnails().thumbnail(str(folder), str(folder / "frame_0001.png"))
    Image.new("RGB", (4, 8000), "red").save(folder / "frame_0002.png")  # absurdly tall
    made = Thumbnails().thumbnail(str(folder), str(folder / "frame_0002.png"))
    with Image.open(io.BytesIO(made)) as thumb:
        assert thumb.format == "JPEG" and thumb.height <= 1280 and thumb.width <= 320


def test_exr_frames_and_videos_get_thumbnails_too(tmp_path: Path) -> None:
    import subprocess

    import numpy as np
    import OpenEXR  # type: ignore[import-not-found]
    from PIL import Image

    from pi_render.web.thumbs import Thumbnails

    folder = tmp_path / "out"
    folder.mkdir()
    linear = np.zeros((24, 48, 4), dtype=np.float32)
    linear[..., 0], linear[..., 3] = 0.5, 1.0  # half red, linear: sRGB ~188
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGBA": linear}).write(str(folder / "frame_0001.exr"))  # fmt: skip
    made = Thumbnails().thumbnail(str(folder), str(folder / "frame_0001.exr"))
    with Image.open(io.BytesIO(made)) as thumb:
        pixel = thumb.convert("RGB").getpixel((10, 10))
        assert isinstance(pixel, tuple)
        red, green = int(pixel[0]), int(pixel[1])
        assert thumb.size == (48, 24) and 175 <= red <= 200 and green < 20
    video = folder / "frame_0001.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=blue:s=64x32:d=1",
                    "-pix_fmt", "yuv420p", str(video)], check=True, timeout=60)  # fmt: skip
    poster = Thumbnails().thumbnail(str(folder), str(video))
    with Image.open(io.BytesIO(poster)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (64, 32)


def test_the_log_tail_is_the_end_of_a_long_log_from_a_lines_start(
    web: tuple[TestClient, Sessions], renderer: DaemonProcess
) -> None:
    client, _ = logged_in(web)
    record = renderer.client.submit("noop", {})
    log = next(renderer.data_dir.rglob("logs")) / f"{record.id}.log"
    lines = [
        f"Fra:{n} Mem:9.40M | Time:00:00.{n % 100:02d} | Rendering sample" for n in range(40_000)
    ]
    log.write_text("\n".join(lines) + "\n")  # 2.3 MB: more than one read of the daemon's log
    tail = client.get(f"/tasks/{record.id}/log.txt").text
    assert tail.endswith(lines[-1] + "\n") and tail.startswith("Fra:") and len(tail) <= 8000
    page = client.get(f"/tasks/{record.id}").text
    assert lines[-1] in page and lines[0] not in page


def test_the_guard_wants_a_bodys_length_and_caps_it() -> None:
    from starlette.responses import PlainTextResponse as Text

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await Text("ok")(scope, receive, send)

    sessions = Sessions()
    session = sessions.log_in(sessions.login_token or "")
    csrf = sessions.csrf_of(session)
    guard: Any = Guard(ok, sessions, {"testserver"}, max_body=10)
    client = TestClient(guard)  # no lifespan: no `with`
    client.cookies.set("pi_render_session", session or "")
    assert client.post(f"/x?csrf={csrf}", content=b"12345").status_code == 200
    assert client.post(f"/x?csrf={csrf}", content=b"x" * 11).status_code == 413
    chunked = client.post(f"/x?csrf={csrf}", content=iter([b"12", b"34"]))
    assert chunked.status_code == 411  # no length: refused before a byte is read


def test_malformed_form_fields_are_refused_cleanly(
    web: tuple[TestClient, Sessions], renderer: DaemonProcess
) -> None:
    client, csrf = logged_in(web)
    record = renderer.client.submit("noop", {"sleep_s": 30})
    answer = client.post(f"/tasks/{record.id}/priority?csrf={csrf}", data={"priority": "bogus"})
    assert answer.status_code == 422 and "not valid" in answer.text
    answer = client.post(f"/submit/whatever?csrf={csrf}", data={"frames": "a-b"})
    assert answer.status_code == 422
    renderer.client.cancel(record.id)


def test_peer_lookup_matches_the_whole_four_tuple(tmp_path: Path) -> None:
    """Two sockets with the same port pair (another user binds 127.0.0.9:PORT and connects to
    the dashboard on PORT): only the one with the connection's own addresses counts."""
    table = tmp_path / "tcp"
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    tail = " 0 0 1 "  # timeout, inode, refcount
    ours = "   0: 0100007F:225F 0900007F:225F 01 00000000:00000000 00:00000000 00000000     0"
    theirs = "   1: 0900007F:225F 0100007F:225F 04 00000000:00000000 00:00000000 00000000 65534"
    table.write_text(f"{header}\n{ours}{tail.replace(' 0 1', ' 111 1')}\n{theirs}"
                     f"{tail.replace(' 0 1', ' 222 1')}\n")  # fmt: skip
    nine, one = (ip_address("127.0.0.9"), 8799), (ip_address("127.0.0.1"), 8799)
    assert table_lookup(nine, one, (str(table),)) == (65534, 222)  # FIN_WAIT1: still found
    assert table_lookup((ip_address("127.0.0.8"), 8799), one, (str(table),)) is None


def test_the_kernel_names_the_owner_of_a_connection_even_half_closed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, address = server.accept()
        with client, accepted:
            port = server.getsockname()[1]
            ends = (ip_address(address[0]), address[1]), (ip_address("127.0.0.1"), port)
            uid, inode = diag_lookup(*ends) or (-1, 0)
            assert uid == os.getuid() and inode != 0
            client.shutdown(socket.SHUT_WR)  # no longer ESTABLISHED: still this user's
            assert (diag_lookup(*ends) or (-1, 0))[0] == os.getuid()
            assert allowed(address, ("127.0.0.1", server.getsockname()[1]), True)
        wrong = (ip_address(address[0]), address[1] + 1), ends[1]
        assert diag_lookup(*wrong) is None
        assert not allowed((address[0], address[1] + 1), ("127.0.0.1", 1), False)  # local
