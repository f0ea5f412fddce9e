#!/usr/bin/env python3
"""A stand-in for Blender, only for faults real Blender cannot be made to show on demand.

FAKE_BLENDER picks the fault: "hang" (prints its banner, then nothing, forever), "oom" (killed
by SIGKILL, as the out-of-memory killer does), "crash" (saves one frame, then aborts mid-render);
and, for the farm tests, "render" (every frame asked for, each a valid PNG after
FAKE_BLENDER_SLEEP seconds) and "fail" (an error and exit 1, as a broken install would).

GPUs, which no test machine has: FAKE_BLENDER_GPUS="CUDA:2" makes it see two CUDA devices
(answering pi-render's device probe as Cycles would); a render prints the arguments it got
("FAKE ARGV [...]") and what device_setup.py would enable. "gpu-oom" fails a GPU render with
Cycles' own out-of-memory message (exit 0, no frame, as Cycles does) and renders on the CPU.
FAKE_BLENDER_BARRIER (a folder): each render waits there until two renders run at once.
"""

import json
import os
import signal
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any


def png(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"\x00" + b"\x80\x80\x80" * 4
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 1, 8, 2, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + body)


def frames(spec: str) -> list[int]:
    """Blender's `-f` list: `a..b` runs and single frames, comma-separated."""
    found: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("..")
        found.extend(range(int(first), int(last or first) + 1))
    return found


def gpus() -> list[dict[str, str]]:
    backend, _, count = os.environ.get("FAKE_BLENDER_GPUS", "").partition(":")
    return [{"backend": backend, "name": f"Fake GPU {i}", "id": f"{backend}_FAKE_0000:0{i}:00"}
            for i in range(int(count or 0))]  # fmt: skip


def device(argv: list[str]) -> dict[str, Any]:
    """What device_setup.py would have done with `--pi-render-device` (after `--`)."""
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    if "--pi-render-device" not in rest:  # `--cycles-device CPU` alone forces the CPU
        forced = "--cycles-device" in rest and rest[rest.index("--cycles-device") + 1] == "CPU"
        return {"device": "CPU" if forced else "FILE"}
    want: dict[str, Any] = json.loads(rest[rest.index("--pi-render-device") + 1])
    if want["device"] == "GPU":
        seen = [g["id"] for g in gpus() if g["backend"] == want["backend"]]
        enabled = [i for i in seen if want["ids"] is None or i in want["ids"]]
        if not enabled:
            print("Error: Python: RuntimeError: GPU device not available", flush=True)
            sys.exit(3)
        print(f"pi-render: Cycles on {want['backend']}: {', '.join(enabled)}", flush=True)
    print(f"@@PI_RENDER device {want['device']}", flush=True)
    return want


def barrier(folder: Path) -> None:
    """Wait (30 s at most) until another render has arrived too: two renders at once."""
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(list(folder.iterdir())) < 2:
        if time.monotonic() > deadline:
            print("Error: fake Blender: no second render came", flush=True)
            sys.exit(1)
        time.sleep(0.05)


def main() -> None:
    argv = sys.argv[1:]
    if "--version" in argv:
        print("Blender 9.9.9 (fake)")
        return
    if any(arg.endswith("gpu_probe.py") for arg in argv):
        print("@@PI_RENDER gpus " + json.dumps(gpus(), separators=(",", ":")), flush=True)
        return
    print("FAKE ARGV " + json.dumps(argv), flush=True)
    print("Blender 9.9.9 (fake)", flush=True)  # after: tests of a hang wait for this line
    mode = os.environ.get("FAKE_BLENDER", "hang")
    want = device(argv)
    if os.environ.get("FAKE_BLENDER_BARRIER"):
        barrier(Path(os.environ["FAKE_BLENDER_BARRIER"]))
    if mode == "gpu-oom" and want["device"] == "GPU":
        print(
            "Fra:1 Mem:12.00M (Peak 12.00M) | Time:00:00.31 | Mem:0.00M, Peak:0.00M | Scene, "
            "ViewLayer | Sample 0/1",
            flush=True,
        )
        print("Error: System is out of GPU memory", flush=True)
        return
    if mode == "gpu-oom":
        mode = "render"
    pattern = argv[argv.index("-o") + 1]
    first = int(argv[argv.index("-f") + 1].split(",")[0].split("..")[0])
    if mode == "hang":
        signal.pause()
    if mode == "env":  # show what it inherited, then fail
        print("ENV " + " ".join(sorted(os.environ)), flush=True)
        sys.exit(1)
    if mode == "oom":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "fail":
        print("Error: fake Blender fails on this host", flush=True)
        sys.exit(1)
    if mode == "render":
        for frame in frames(argv[argv.index("-f") + 1]):
            print(f"@@PI_RENDER frame_start {frame}", flush=True)
            time.sleep(float(os.environ.get("FAKE_BLENDER_SLEEP", "0.1")))
            out = Path(pattern.replace("####", f"{frame:04d}") + ".png")
            png(out)
            print(f"Saved: '{out}'", flush=True)
        return
    if mode == "crash":
        out = Path(pattern.replace("####", f"{first:04d}") + ".png")
        print(f"@@PI_RENDER frame_start {first}", flush=True)
        png(out)
        print(f"Saved: '{out}'", flush=True)
        print(f"@@PI_RENDER frame_start {first + 1}", flush=True)
        os.abort()


main()
