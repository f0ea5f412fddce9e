"""What pi-render adds to a render: the wall time of `pi-render render --wait` against bare
`blender -b … -f …` on the same file and frames, alternating, in one run. Prints one table.

    .venv/bin/python bench/render_overhead.py [--runs 5] [--frames 5] [--samples 300] [--size 64]

The sample scene is made by the local Blender (Cycles on the CPU; samples and size set the render
time, ~2 s by default). Both sides use the same command line options (see RenderCommand).
"""

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pi_render.api.client import Client
from pi_render.errors import DaemonUnreachable
from pi_render.processor.blender import SAMPLE_SCENE, find_blender


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    blender = find_blender(None)
    if blender is None or blender.kind != "executable":
        sys.exit("needs a Blender executable (apt-get install blender)")
    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    scene = work / "scene.blend"
    subprocess.run([blender.path, "-b", "--factory-startup", "--python", str(SAMPLE_SCENE), "--",
                    str(scene), str(args.frames), str(args.samples), str(args.size)],
                   check=True, capture_output=True)  # fmt: skip
    sock = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp")) / "api.sock"
    config = work / "config.toml"
    config.write_text(f'data_dir = "{work / "data"}"\nsocket = "{sock}"\n'
                      'log_level = "WARNING"\n[workers]\ndefault = 1\nrender = 1\n')  # fmt: skip
    cli = [str(Path(sys.executable).parent / "pi-render")]
    daemon = subprocess.Popen([*cli, "serve", "--config", str(config)])
    try:
        with Client(sock) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.health()
                    break
                except DaemonUnreachable:
                    if time.monotonic() > deadline:
                        sys.exit("the daemon did not start")
                    time.sleep(0.05)
        frames = f"1..{args.frames}"
        bare_argv = [blender.path, "-b", "-Y", "-noaudio", str(scene), "-o",
                     str(work / "bare" / "frame_####"), "-F", "PNG", "-x", "1", "-t", "0",
                     "-f", frames]  # fmt: skip
        ours, api, bare = [], [], []
        with Client(sock) as client:
            for run in range(args.runs):
                bare.append(timed(bare_argv))
                out = work / f"ours{run}"
                ours.append(timed([*cli, "render", str(scene), "--output", str(out), "--format",
                                   "PNG", "--wait", "--json", "--socket", str(sock)]))  # fmt: skip
                start = time.perf_counter()
                record = client.render({"source": str(scene), "output_dir": str(work / f"api{run}"),
                                        "output_type": "PNG"})  # fmt: skip
                assert client.wait(record.id).status == "completed"
                api.append(time.perf_counter() - start)
                shutil.rmtree(work / "bare", ignore_errors=True)
        version = os.cpu_count(), platform.python_version(), blender.version
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        print(f"machine: {version[0]} CPUs, Python {version[1]}, Blender {version[2]}; "
              f"{args.frames} frames of {args.size}×{args.size} px, Cycles {args.samples} "
              f"samples; {args.runs} alternating runs")  # fmt: skip
        print(f"{'':28} {'median s':>9} {'min s':>7} {'max s':>7}")
        rows = (("blender -b … -f (bare)", bare), ("pi-render render --wait", ours),
                ("API submit + wait", api))  # fmt: skip
        for name, times in rows:
            print(f"{name:28} {statistics.median(times):9.3f} {min(times):7.3f} {max(times):7.3f}")
        ratio = statistics.median(ours) / statistics.median(bare)
        print(f"\nratio pi-render render --wait / bare (median): {ratio:.3f}  (goal <= 1.05)")
        print(f"ratio API submit + wait / bare (median):       "
              f"{statistics.median(api) / statistics.median(bare):.3f}")  # fmt: skip
        start = time.perf_counter()
        subprocess.run([*cli, "version"], check=True, capture_output=True)
        print(f"of which the CLI's own start-up (pi-render version): "
              f"{time.perf_counter() - start:.3f} s")  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
