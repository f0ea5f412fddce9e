"""Idle cost and soak: does an idle pi_render daemon stay asleep, and does its memory stay flat
over many tasks?

    .venv/bin/python bench/soak.py                                   # full size
    .venv/bin/python bench/soak.py --idle-s 10 --tasks 3000 --wave 500

Part A, idle: a fresh daemon (pi_render's default settings) settles for a few seconds, then its
CPU time (utime + stime) is read over --idle-s seconds, as a % of one core (goal <= 1 %), with
the context switches of each of its threads over the same window: a thread that polls shows up
as one that keeps waking.

Part B, soak: the same daemon gets --tasks noop tasks in waves of --wave, each task one
POST /tasks from --clients threads, every task long-polled until it has completed before the
next wave; the daemon's resident memory after each wave, and its growth from wave 2 to the last
(wave 1 includes the one-off costs of a first use: imports, caches, SQLite pages).

A measurement, not a test: nothing is asserted (tests/test_load_soak.py checks a CI-sized soak).
"""

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence

from loadgen import (
    Api,
    BenchDaemon,
    Recorder,
    deadline_poll,
    fmt,
    peak_rss_mib,
    print_run_header,
    print_table,
    proc_cpu_s,
    rss_mib,
    soak_wave,
    thread_switches,
)

IDLE_GOAL_PCT = 1.0


def part_a(daemon: BenchDaemon, args: argparse.Namespace) -> None:
    print(f"[A] settling {args.settle_s:g} s, then measuring idle CPU over {args.idle_s:g} s...")
    window = threading.Event()
    window.wait(args.settle_s)  # a settling period, not a wait for an event
    cpu0, switches0, t0 = proc_cpu_s(daemon.pid), thread_switches(daemon.pid), time.monotonic()
    window.wait(args.idle_s)  # the measurement window itself
    cpu, wall = proc_cpu_s(daemon.pid) - cpu0, time.monotonic() - t0
    switches = thread_switches(daemon.pid)
    woke = {tid: n - switches0.get(tid, 0) for tid, n in switches.items()}
    pct = 100 * cpu / wall
    verdict = "met" if pct <= IDLE_GOAL_PCT else "NOT met"
    print()
    print(
        f"idle CPU:      {cpu:.2f} s over {wall:.1f} s = {pct:.2f}% of one core "
        f"(goal <= {IDLE_GOAL_PCT:g} %: {verdict}; clock tick {1 / os.sysconf('SC_CLK_TCK'):g} s)"
    )
    print(
        f"threads:       {len(switches)}, woken {sum(woke.values())} times in all "
        f"({sum(woke.values()) / wall:.2f}/s)"
    )
    busy = sorted(((n, tid) for tid, n in woke.items() if n), reverse=True)
    for n, tid in busy[:8]:
        what = " (the main thread: it runs uvicorn's event loop)" if tid == daemon.pid else ""
        print(f"  thread {tid}: {n} wake-ups ({n / wall:.2f}/s){what}")
    print(f"RSS idle:      {rss_mib(daemon.pid):.1f} MiB")
    print(flush=True)


def part_b(daemon: BenchDaemon, args: argparse.Namespace) -> None:
    waves = -(-args.tasks // args.wave)
    print(
        f"[B] {args.tasks:,} noop tasks in {waves} waves of {args.wave:,}, "
        f"{args.clients} clients, each task waited for...",
        flush=True,
    )
    rows: list[list[str]] = []
    rss: list[float] = []
    errors = Recorder()
    done = 0
    with Api(daemon.socket) as api:
        for wave in range(1, waves + 1):
            size = min(args.wave, args.tasks - done)
            t0 = time.monotonic()
            rec = soak_wave(daemon.socket, size, args.clients)
            drained = deadline_poll(lambda: api.unfinished() == 0, 60.0)
            wall = time.monotonic() - t0
            errors.merge(rec)
            done += size
            rss.append(rss_mib(daemon.pid))
            counts = api.health()["records"]
            rows.append(
                [
                    str(wave),
                    f"{done:,}",
                    f"{counts['completed']:,}",
                    f"{wall:.1f}",
                    f"{size / wall:,.0f}",
                    fmt(rec.p50_ms("submit")),
                    fmt(rec.p99_ms("submit")),
                    str(rec.errors) + ("" if drained else " (not drained)"),
                    f"{rss[-1]:.1f}",
                    f"{peak_rss_mib(daemon.pid):.1f}",
                ]
            )
    print()
    print_table(
        (
            "wave",
            "submitted",
            "completed",
            "wall s",
            "tasks/s",
            "submit p50 ms",
            "submit p99 ms",
            "errors",
            "RSS MiB",
            "peak MiB",
        ),
        rows,
    )
    print()
    if len(rss) >= 3:
        growth = rss[-1] - rss[1]
        per_k = 1024 * growth / ((len(rss) - 2) * args.wave / 1000)
        print(
            f"RSS growth wave 2 -> {len(rss)}: {growth:+.1f} MiB ({per_k:+.0f} KiB per 1,000 "
            f"tasks); wave 1 -> {len(rss)}: {rss[-1] - rss[0]:+.1f} MiB"
        )
    if len(rss) >= 4:
        half = len(rss) // 2
        print(
            f"RSS growth over the second half (wave {half} -> {len(rss)}): "
            f"{rss[-1] - rss[half - 1]:+.1f} MiB"
        )
    print(f"errors: {errors.errors}")
    for line in errors.first_errors:
        print(f"  {line}")
    print(flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle window, s (60)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="settling before it, s (5)")
    parser.add_argument("--tasks", type=int, default=10_000, help="soak tasks (10000)")
    parser.add_argument("--wave", type=int, default=1000, help="tasks per wave (1000)")
    parser.add_argument("--clients", type=int, default=4, help="submitting threads (4)")
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and daemon log")
    args = parser.parse_args(argv)
    if args.idle_s <= 0 or args.tasks < 1 or args.wave < 1 or args.clients < 1:
        parser.error("need --idle-s > 0 and --tasks, --wave, --clients >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print_run_header("pi_render defaults")
    daemon = BenchDaemon(keep=args.keep)
    try:
        if args.part in ("a", "both"):
            part_a(daemon, args)
        if args.part in ("b", "both"):
            part_b(daemon, args)
    finally:
        daemon.stop()
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
