"""Load and soak at CI size against a real daemon: concurrent clients get no errors, latency
stays flat as records pile up, memory stays flat over many tasks. The full-size runs are
bench/load.py and bench/soak.py; all three share bench/loadgen.py (on the path through
setup.cfg's `pythonpath`). Idle CPU is checked in test_daemon_lifecycle.py."""

import random

import pytest
from conftest import DaemonProcess, wait_until
from loadgen import (
    KINDS,
    Api,
    Recorder,
    grow,
    percentile,
    rss_mib,
    run_mixed,
    sample_latencies,
    soak_wave,
)


@pytest.mark.timeout(120)
def test_ten_concurrent_clients_get_no_errors_and_quick_answers(daemon: DaemonProcess) -> None:
    """10 clients x 100 requests (submit, status, list, long-poll wait), all at once."""
    result = run_mixed(daemon.socket, clients=10, requests=100, wait_timeout_s=1.0)
    rec = result.recorder
    assert rec.errors == 0, rec.first_errors
    assert rec.requests == 1000 and set(rec.latencies) == set(KINDS)
    p99 = percentile(rec.all_latencies(), 99)
    assert p99 < 2.0, f"p99 {p99:.3f} s over {rec.requests} requests"


@pytest.mark.timeout(120)
def test_latency_stays_flat_as_records_grow(daemon: DaemonProcess) -> None:
    """Status, list and submit cost the same with ~3,000 records as with a few dozen."""
    rng = random.Random(3)
    with Api(daemon.socket) as api:
        ids = [api.submit()]
        ids += sample_latencies(api, ids, 10, rng, Recorder())  # warm-up, not measured
        before = Recorder()
        ids += sample_latencies(api, ids, 60, rng, before)
        ids += grow(api, 3000)
        wait_until(lambda: api.unfinished() == 0, 60, "3,000 noop tasks to finish")
        after = Recorder()
        sample_latencies(api, ids, 60, rng, after)
    assert before.errors == after.errors == 0, before.first_errors + after.first_errors
    for kind in before.latencies:
        start, end = before.p50_ms(kind), after.p50_ms(kind)
        assert end <= 3 * start + 5, f"{kind}: p50 {start:.2f} ms -> {end:.2f} ms"


@pytest.mark.timeout(120)
def test_memory_stays_flat_over_a_soak(daemon: DaemonProcess) -> None:
    """2,000 noop tasks in 5 waves, each task waited for: RSS after wave 2 grows < 20 MiB."""
    assert daemon.proc is not None
    rss = []
    for _ in range(5):
        rec = soak_wave(daemon.socket, 400, clients=4)
        assert rec.errors == 0, rec.first_errors
        rss.append(rss_mib(daemon.proc.pid))
    growth = rss[-1] - rss[1]
    assert growth < 20, f"RSS per wave (MiB): {[round(r, 1) for r in rss]}"
