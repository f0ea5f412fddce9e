"""The `pi-render` entry point: the commands scripts call most (`status`, `list`, `wait` and
`render` with `--json`, and `version`) are answered here with the standard library alone, an
HTTP request over the Unix socket, in a few tens of milliseconds. Everything else, and anything
this parser is unsure of, goes to the full CLI (typer, rich, httpx, pydantic: ~0.5 s to
import), which gives the same output, errors and exit codes; tests/test_quick_cli.py holds
them to that."""

import json
import os
import socket
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from pi_render import __version__
from pi_render.locations import default_data_dir, default_socket

EXIT_TASK_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4
FINAL = {"completed", "failed", "cancelled"}  # TaskStatus's, which a test holds this to
STATUSES = {"pending", "running", "retrying", *FINAL}
LONG_POLL_CHUNK_S = 60.0
OPTIONS = {"--socket", "--timeout", "--status", "--type", "--limit", "--offset", "--blend",
           "--frames", "--step", "--format", "--output", "--scene", "--engine", "--priority",
           "--chunk-size", "--device"}  # fmt: skip
FLAGS = {"--json", "--wait", "--force", "--allow-missing", "--check-space"}
RENDER = {"--json", "--socket", "--wait", "--force", "--allow-missing", "--check-space",
          "--blend", "--frames",
          "--step", "--format", "--output", "--scene", "--engine", "--priority", "--timeout",
          "--chunk-size", "--device"}  # fmt: skip


class NotMine(Exception):
    """This command is the full CLI's to answer."""


def exchange(path: str, method: str, target: str, timeout: float,
             body: bytes | None = None) -> tuple[int, bytes]:  # fmt: skip
    """One HTTP/1.1 request over the Unix socket (http.client costs 25 ms of imports): the
    status and the body (uvicorn sends a JSON answer with Content-Length, or chunked)."""
    sent = b"" if body is None else body
    kind = "" if body is None else "Content-Type: application/json\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: pi-render\r\nAccept: "
                     f"application/json\r\n{kind}Content-Length: {len(sent)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + sent)  # fmt: skip
        parts = []
        while chunk := sock.recv(1 << 16):
            parts.append(chunk)
    head, _, body = b"".join(parts).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if any(line.lower().replace(" ", "") == "transfer-encoding:chunked" for line in lines):
        body = dechunk(body)
    return status, body


def dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(body[:size])
        body = body[size + 2 :]
    return b"".join(out)


def parse(argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(command, positional arguments, options); raises NotMine for anything unexpected."""
    if not argv:
        raise NotMine()
    command, rest = argv[0], argv[1:]
    words: list[str] = []
    options: dict[str, str] = {}
    while rest:
        word = rest.pop(0)
        name, equals, value = word.partition("=")
        if word in FLAGS:
            options[word] = ""
        elif name in OPTIONS and name not in options and (equals or rest):
            options[name] = value if equals else rest.pop(0)
        elif word.startswith("-"):
            raise NotMine()  # --help, a typo, a repeated option: the full CLI says what it means
        else:
            words.append(word)
    return command, words, options


def socket_path(options: dict[str, str]) -> str:
    """As load_settings finds it: --socket, PI_RENDER_SOCKET, the config file, the default."""
    env = os.environ
    given = options.get("--socket") or env.get("PI_RENDER_SOCKET")
    if given:
        return given
    raw: dict[str, Any] = {}
    if env.get("PI_RENDER_CONFIG"):
        try:
            raw = tomllib.loads(Path(env["PI_RENDER_CONFIG"]).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raise NotMine() from None  # the full CLI explains what is wrong with it
    if env.get("PI_RENDER_DATA_DIR"):
        raw["data_dir"] = env["PI_RENDER_DATA_DIR"]
    if isinstance(raw.get("socket"), str):
        return str(raw["socket"])
    data_dir = Path(str(raw.get("data_dir") or default_data_dir(env))).expanduser().absolute()
    return str(default_socket(env, data_dir))


def fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def call(path: str, target: str, timeout: float = 30.0, method: str = "GET",
         body: Any = None) -> Any:  # fmt: skip
    """`method` `target` (with a JSON `body`); the JSON answer, or exit as the full CLI does on
    an error."""
    data = None if body is None else json.dumps(body).encode()
    try:
        status, text = exchange(path, method, target, timeout, data)
    except (OSError, ValueError, IndexError) as exc:
        fail(f"no pi-render daemon answers on {path} ({exc}); start one with `pi-render "
             f"serve` (or `systemctl start pi-render`), or point --socket at it",
             EXIT_UNREACHABLE)  # fmt: skip
    try:
        body = json.loads(text)
    except ValueError:
        body = {"message": text.decode("utf-8", "replace")}
    if status >= 400:
        message = (body.get("message") or body.get("detail") or body) if isinstance(
            body, dict) else body  # fmt: skip
        fail(f"{message} (HTTP {status})", EXIT_USAGE)
    return body


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def run(argv: list[str]) -> int:
    command, words, options = parse(argv)
    if command == "version" and not words and set(options) <= {"--json"}:
        if "--json" in options:
            emit({"version": __version__})
        else:
            sys.stdout.write(f"pi-render {__version__}\n")
        return 0
    if "--json" not in options:
        raise NotMine()  # tables and progress are rich's
    if command == "status" and len(words) == 1 and set(options) <= {"--json", "--socket"}:
        emit(call(socket_path(options), f"/tasks/{quote(words[0], safe='')}"))
        return 0
    if command == "list" and not words and "--timeout" not in options:
        return list_tasks(options)
    if command == "wait" and len(words) == 1 and set(options) <= {"--json", "--socket",
                                                                  "--timeout"}:  # fmt: skip
        return wait(socket_path(options), words[0], options.get("--timeout"))
    if command == "render" and len(words) == 1 and set(options) <= RENDER:
        return render(words[0], options)
    raise NotMine()


def render(file: str, options: dict[str, str]) -> int:
    """`render FILE --json [--wait] …`: the same request the full CLI builds, the same answer."""
    from pi_render.render_request import render_request

    def number(name: str, kind: type, least: float) -> Any:
        if name not in options:
            return None
        try:
            value = kind(options[name])
        except ValueError:
            raise NotMine() from None
        if value < least:
            raise NotMine()
        return value

    if options.get("--priority", "normal") not in ("normal", "high"):
        raise NotMine()
    if options.get("--device", "auto") not in ("auto", "cpu", "gpu"):
        raise NotMine()
    try:
        request = render_request(
            file, blend=options.get("--blend"), frames=options.get("--frames"),
            step=number("--step", int, 1), output_type=options.get("--format"),
            output=options.get("--output"), scene=options.get("--scene"),
            engine=options.get("--engine"), priority=options.get("--priority", "normal"),
            timeout=number("--timeout", float, float("-inf")), force="--force" in options,
            allow_missing="--allow-missing" in options,
            chunk_size=number("--chunk-size", int, 0), device=options.get("--device"),
            check_space="--check-space" in options)  # fmt: skip
    except ValueError:
        raise NotMine() from None  # --frames the full CLI explains
    path = socket_path(options)
    record = call(path, "/render-tasks", 120.0, "POST", request)
    if "--wait" not in options:
        emit(record)
        return 0
    return wait(path, record["id"], None)


def list_tasks(options: dict[str, str]) -> int:
    query: dict[str, str | int] = {"limit": options.get("--limit", "20"),
                                   "offset": options.get("--offset", "0")}  # fmt: skip
    limit, offset = str(query["limit"]), str(query["offset"])
    if not (limit.isdigit() and 1 <= int(limit) <= 1000 and offset.isdigit()):
        raise NotMine()  # the full CLI's range errors
    if "--status" in options:
        if options["--status"] not in STATUSES:
            raise NotMine()
        query["status"] = options["--status"]
    if "--type" in options:
        query["type"] = options["--type"]
    emit(call(socket_path(options), f"/tasks?{urlencode(query)}"))
    return 0


def wait(path: str, task_id: str, timeout_text: str | None) -> int:
    try:
        timeout = None if timeout_text is None else float(timeout_text)
    except ValueError:
        raise NotMine() from None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = LONG_POLL_CHUNK_S if deadline is None else max(0.0, deadline - time.monotonic())
        chunk = min(LONG_POLL_CHUNK_S, left)
        target = f"/tasks/{quote(task_id, safe='')}/wait?{urlencode({'timeout': chunk})}"
        record = call(path, target, timeout=chunk + 30)
        if record["status"] in FINAL or (deadline is not None and time.monotonic() >= deadline):
            break
    emit(record)
    if record["status"] not in FINAL:
        return EXIT_TIMEOUT
    return 0 if record["status"] == "completed" else EXIT_TASK_FAILED


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except NotMine:
        from pi_render.cli import main as full

        full()
        return
    sys.exit(code)
