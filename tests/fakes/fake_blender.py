#!/usr/bin/env python3
"""A stand-in for Blender, only for faults real Blender cannot be made to show on demand.

FAKE_BLENDER picks the fault: "hang" (prints its banner, then nothing, forever), "oom" (killed
by SIGKILL, as the out-of-memory killer does), "crash" (saves one frame, then aborts mid-render);
and, for the farm tests, "render" (every frame asked for, each a valid PNG after
FAKE_BLENDER_SLEEP seconds) and "fail" (an error and exit 1, as a broken install would).
"""

import os
import signal
import struct
import sys
import time
import zlib
from pathlib import Path


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


def main() -> None:
    argv = sys.argv[1:]
    if "--version" in argv:
        print("Blender 9.9.9 (fake)")
        return
    print("Blender 9.9.9 (fake)", flush=True)
    mode = os.environ.get("FAKE_BLENDER", "hang")
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
