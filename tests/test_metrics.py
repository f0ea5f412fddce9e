"""`GET /metrics`: Prometheus text that prometheus_client's own parser reads, whose counters
move as tasks run, and whose gauges come from the stores."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import DaemonProcess, start_fake_renderer
from prometheus_client.parser import text_string_to_metric_families


def scrape(daemon: DaemonProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) → value."""
    samples = {}
    for family in text_string_to_metric_families(daemon.client.metrics()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_as_tasks_run_and_gauges_read_the_stores(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = start_fake_renderer(make_daemon, 0.05)
    before = scrape(daemon)
    assert value(before, "pi_render_tasks_submitted_total", type="noop") == 0
    assert value(before, "pi_render_workers_up", label="render") == 1
    ids = [daemon.client.submit("noop", {"payload": n}).id for n in range(3)]
    render = daemon.client.render({"source": str(scenes["tiny"])})
    for task_id in [*ids, render.id]:
        assert daemon.client.wait(task_id, 60).status == "completed"
    after = scrape(daemon)
    assert value(after, "pi_render_tasks_submitted_total", type="noop") == 3
    assert value(after, "pi_render_tasks_finished_total", type="noop", status="completed") == 3
    assert value(after, "pi_render_tasks_finished_total", type="render", status="completed") == 1
    assert value(after, "pi_render_frames_rendered_total") == 3
    assert value(after, "pi_render_frame_render_seconds_count") == 3
    assert value(after, "pi_render_task_duration_seconds_count", type="noop") == 3
    assert value(after, "pi_render_task_queue_wait_seconds_count", type="render") == 1
    assert value(after, "pi_render_tasks", status="completed") == 4  # read from the records
    assert value(after, "pi_render_tasks_running") == 0
    assert value(after, "pi_render_queue_depth", label="default", state="normal") == 0
    assert value(after, "pi_render_free_bytes", disk="output") > 0
    build = [k for k in after if k[0] == "pi_render_build_info"]
    assert build and dict(build[0][1])["blender"] == "9.9.9"
    assert not any("task_id" in dict(labels) or "uid" in dict(labels) for _, labels in after)


def test_failures_count_retries_blender_reasons_and_dead_tasks(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    retry = "[retry.render]\nmax_attempts = 2\nbase_delay_s = 0.1\n"
    daemon = start_fake_renderer(make_daemon, mode="fail", tables=retry)
    render = daemon.client.render({"source": str(scenes["tiny"])})
    dead = daemon.client.wait(render.id, 60)
    assert dead.status == "failed" and dead.error is not None
    samples = scrape(daemon)
    assert value(samples, "pi_render_task_retries_total", type="render") == 1
    assert value(samples, "pi_render_tasks_finished_total", type="render", status="failed") == 1
    assert value(samples, "pi_render_blender_failures_total", reason=dead.error.type) == 2
    assert value(samples, "pi_render_tasks_dead") == 1


def test_pi_render_metrics_writes_a_node_exporter_textfile_whole(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon().start()
    daemon.client.wait(daemon.client.submit("noop", {}).id, 60)
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    target = textfiles / "pi_render.prom"
    target.write_text("# an older scrape\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pi_render", "metrics", "--socket",
                               str(daemon.socket), *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = cli("--textfile", str(target), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["textfile"] == str(target)
    written = {s.name: s.value for f in text_string_to_metric_families(target.read_text())
               for s in f.samples if s.labels.get("type") == "noop"}  # fmt: skip
    assert written["pi_render_tasks_submitted_total"] == 1
    assert [p.name for p in textfiles.iterdir()] == ["pi_render.prom"]  # no temp file left
    refused = cli("--textfile", str(textfiles / "pi_render.txt"))
    assert refused.returncode == 2 and "*.prom" in refused.stderr + refused.stdout
    samples = json.loads(cli("--json").stdout)
    assert {"name": "pi_render_tasks_submitted_total", "labels": {"type": "noop"},
            "value": 1.0} in samples  # fmt: skip
