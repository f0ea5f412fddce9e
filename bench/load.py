"""Load and scale: a pi_render daemon under many concurrent API clients, and its latency and
memory as its task records grow.

    .venv/bin/python bench/load.py                                  # full size
    .venv/bin/python bench/load.py --clients 10 --requests 100 --grow 5000 --samples 50

Part A, concurrency: a fresh daemon (pi_render's default settings), C client threads with one
connection each, R requests each, cycling through submit (noop), status of one of its own tasks,
list (limit 50) and a long-poll wait (short timeout) on the task it submitted last. Reports
errors (any non-2xx answer or transport error), p50/p99 per kind and overall, requests/s, and
the daemon's CPU and resident memory (now and peak).

Part B, growth: another fresh daemon whose records grow to G tasks by batch submits; at each
checkpoint, once the noop tasks have drained (or the drain timeout passed: the table says
which), S sequential rounds of submit, status (a random known task), list (limit 50) and list
of completed tasks (limit 50), and the daemon's resident memory. The last row divides the last
checkpoint by the first, so a latency or memory that grows with the records shows at once.

A measurement, not a test: nothing is asserted (tests/test_load_soak.py checks CI-sized
versions). The clients run in this process and share the host's CPUs with the daemon.
"""

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence

from loadgen import (
    KINDS,
    Api,
    BenchDaemon,
    Recorder,
    deadline_poll,
    fmt,
    grow,
    peak_rss_mib,
    percentile,
    print_run_header,
    print_table,
    proc_cpu_s,
    rss_mib,
    run_mixed,
    sample_latencies,
)

WARMUP_ROUNDS = 10  # untimed rounds before the first checkpoint (connections, caches, imports)
B_KINDS = ("submit", "status", "list", "list completed")


def part_a(args: argparse.Namespace) -> None:
    daemon = BenchDaemon(keep=args.keep)
    try:
        print(
            f"[A] {args.clients} clients x {args.requests} mixed requests "
            f"({', '.join(KINDS)}; wait timeout {args.wait_timeout} s)...",
            flush=True,
        )
        cpu0, own0 = proc_cpu_s(daemon.pid), _own_cpu_s()
        result = run_mixed(daemon.socket, args.clients, args.requests, args.wait_timeout)
        cpu, own = proc_cpu_s(daemon.pid) - cpu0, _own_cpu_s() - own0
        rss, peak = rss_mib(daemon.pid), peak_rss_mib(daemon.pid)
    finally:
        daemon.stop()

    rec = result.recorder
    rows = [_kind_row(kind, rec.latencies.get(kind, [])) for kind in KINDS]
    rows.append(_kind_row("all", rec.all_latencies()))
    rows.append(_kind_row("all but wait", rec.all_latencies(leave_out=("wait",))))
    print()
    print_table(("request", "count", "p50 ms", "p99 ms", "max ms"), rows)
    print()
    print(f"requests:          {rec.requests:,} ({args.clients} clients x {args.requests})")
    print(f"errors:            {rec.errors}" + (" (goal 0: met)" if rec.errors == 0 else ""))
    for line in rec.first_errors:
        print(f"  {line}")
    print(f"wall time:         {result.wall_s:.1f} s")
    print(f"throughput:        {rec.requests / result.wall_s:,.0f} requests/s")
    waits = len(rec.latencies.get("wait", []))
    print(f"waits final:       {result.waits_final:,} of {waits:,} (others hit their timeout)")
    print(f"daemon CPU:        {cpu:.1f} s ({100 * cpu / result.wall_s:.0f}% of one core)")
    print(f"client CPU:        {own:.1f} s (this process: {args.clients} client threads)")
    print(f"daemon RSS:        {rss:.1f} MiB now, {peak:.1f} MiB peak (VmHWM)")
    print(flush=True)


def _kind_row(kind: str, values: Sequence[float]) -> list[str]:
    if not values:
        return [kind, "0", "-", "-", "-"]
    return [
        kind,
        f"{len(values):,}",
        fmt(1000 * percentile(values, 50)),
        fmt(1000 * percentile(values, 99)),
        fmt(1000 * max(values)),
    ]


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def part_b(args: argparse.Namespace) -> None:
    checkpoints = sorted(set(args.checkpoints or _default_checkpoints(args.grow)))
    daemon = BenchDaemon(keep=args.keep)
    rng = random.Random(2)
    rows: list[list[str]] = []
    figures: list[list[float]] = []  # per checkpoint: p50/p99 per kind, then RSS
    errors = Recorder()
    grow_s = 0.0
    try:
        with Api(daemon.socket, timeout=600) as api:
            ids = [api.submit()]
            ids += sample_latencies(api, ids, WARMUP_ROUNDS, rng, Recorder())
            grown = 0
            for target in checkpoints:
                print(f"[B] checkpoint {target:,}: grow, drain, measure...", flush=True)
                t0 = time.monotonic()
                ids += grow(api, max(0, target - grown))
                grow_s += time.monotonic() - t0
                grown = max(grown, target)
                t0 = time.monotonic()
                drained = deadline_poll(lambda: api.unfinished() == 0, args.drain_timeout, 0.2)
                drain_s, left = time.monotonic() - t0, 0 if drained else _left(api)
                rec = Recorder()
                ids += sample_latencies(api, ids, args.samples, rng, rec)
                errors.merge(rec)
                row = [f"{len(ids):,}", "yes" if drained else f"no: {left:,} left"]
                row.append(f"{drain_s:.1f}")
                nums = [ms for kind in B_KINDS for ms in (rec.p50_ms(kind), rec.p99_ms(kind))]
                nums += [rss_mib(daemon.pid), peak_rss_mib(daemon.pid)]
                figures.append(nums)
                rows.append(row + [fmt(n) for n in nums])
    finally:
        daemon.stop()
    first, last = figures[0], figures[-1]
    rows.append(
        ["ratio last/first", "", ""]
        + [f"{b / a:.2f}x" if a > 0 else "-" for a, b in zip(first, last)]
    )
    header = ["records", "drained", "drain s"]
    for kind in B_KINDS:
        header += [f"{kind} p50", f"{kind} p99"]
    header += ["RSS MiB", "peak MiB"]
    print()
    print(f"latencies in ms over {args.samples} sequential requests of each kind per checkpoint")
    print_table(header, rows)
    print()
    print(f"growth: {grown:,} tasks batch-submitted in {grow_s:.1f} s")
    print(f"errors: {errors.errors}")
    for line in errors.first_errors:
        print(f"  {line}")
    print(flush=True)


def _left(api: Api) -> int:
    """Pending + running tasks (a full count, only at checkpoints)."""
    counts = api.health()["records"]
    return int(counts["pending"]) + int(counts["running"])


def _default_checkpoints(total: int) -> list[int]:
    return [0] + [int(total * f) for f in (0.1, 0.25, 0.5, 1.0)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per client (1000)")
    parser.add_argument(
        "--wait-timeout", type=float, default=1.0, help="long-poll timeout of a wait, s (1.0)"
    )
    parser.add_argument("--grow", type=int, default=100_000, help="records to grow to (100000)")
    parser.add_argument(
        "--checkpoints",
        type=lambda text: [int(n) for n in text.split(",")],
        help="comma-separated record counts to measure at (0 and 10/25/50/100%% of --grow)",
    )
    parser.add_argument(
        "--samples", type=int, default=200, help="requests of each kind per checkpoint (200)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="longest wait for a drain, s (600)"
    )
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and daemon logs")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < len(KINDS) or args.samples < 2:
        parser.error(f"need --clients >= 1, --requests >= {len(KINDS)}, --samples >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print_run_header("pi_render defaults (workers default=2)")
    if args.part in ("a", "both"):
        part_a(args)
    if args.part in ("b", "both"):
        part_b(args)
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
