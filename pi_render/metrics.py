"""Prometheus metrics for `GET /metrics` (text format, prometheus_client).

Counters and histograms move with what this daemon commits (a records listener) and the frames
it lands; they start from zero with each daemon, as Prometheus expects of counters. Gauges are
read from the stores at scrape time, so they cannot drift after a restart. Label values are
task types, statuses, routing labels, reasons and cron job names: never task ids, paths or uids.
docs/metrics.md lists every metric.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pi_render.task.record import TaskRecord, TaskStatus

DURATIONS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
FRAME_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
BLENDER_FAILURES = {"BlenderKilled", "BlenderCrashed", "RenderStalled", "RenderTimeout",
                    "RenderFailed", "MissingFrames", "MissingAssets", "PausedTooLong",
                    "BlendUnreadable", "NoBlender", "SnapshotUnreachable",
                    "NoBlenderOpensIt", "GpuOutOfMemory", "GpuError", "NoGpuHere",
                    "OutputDiskFull", "OutputDiskTooSmall"}  # fmt: skip
State = Callable[[], dict[str, Any]]


class Metrics:
    """One registry per daemon: its counters, and a collector of the gauges `state()` gives."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter("pi_render_tasks_submitted", "Tasks submitted", ["type"],
                                 registry=r)  # fmt: skip
        self.finished = Counter("pi_render_tasks_finished", "Tasks that reached a final state",
                                ["type", "status"], registry=r)  # fmt: skip
        self.retries = Counter("pi_render_task_retries", "Failed attempts scheduled to run "
                               "again", ["type"], registry=r)  # fmt: skip
        self.duration = Histogram(
            "pi_render_task_duration_seconds",
            "Start of the last attempt " "to the final state",
            ["type"],
            buckets=DURATIONS,
            registry=r,
        )
        self.wait = Histogram("pi_render_task_queue_wait_seconds", "Submit to the first start",
                              ["type"], buckets=DURATIONS, registry=r)  # fmt: skip
        self.frames = Counter("pi_render_frames_rendered", "Frames rendered, checked and "
                              "recorded", registry=r)  # fmt: skip
        self.frame_seconds = Histogram("pi_render_frame_render_seconds", "Time to render one "
                                       "frame", buckets=FRAME_SECONDS, registry=r)  # fmt: skip
        self.blender_failures = Counter("pi_render_blender_failures", "Failed render attempts "
                                        "by reason", ["reason"], registry=r)  # fmt: skip
        self.cron_fires = Counter("pi_render_cron_fires", "Tasks made by cron jobs", ["job"],
                                  registry=r)  # fmt: skip
        r.register(StoreGauges(state))
        self._started: OrderedDict[str, None] = OrderedDict()  # ids whose start was counted
        self._lock = threading.Lock()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _of(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: prometheus_client's own lookup checks and
        locks each time, ~10% of a worker's time per tiny task (label values are few: types,
        statuses, reasons, job names)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def on_record(self, record: TaskRecord) -> None:
        """Records listener: every committed change (in the writer's thread)."""
        status = record.status
        chunk = record.job is not None  # counted once, as its job (its attempts count below)
        if record.version == 0:
            if chunk:
                return
            self._of(self.submitted, record.type).inc()
            if record.origin and record.origin.startswith("cron:"):
                self._of(self.cron_fires, record.origin[5:].rsplit("@", 1)[0]).inc()
            return
        if status is TaskStatus.RUNNING:
            if record.attempts == 1 and record.started_at is not None and self._first(record):
                self._of(self.wait, record.type).observe(
                    max(0.0, (record.started_at - record.created_at).total_seconds())
                )
            return
        if status is TaskStatus.RETRYING and record.next_attempt_at is not None:
            self._of(self.retries, record.type).inc()
            self._blender_failure(record)
        elif status.is_final and not chunk and record.finished_at is not None:
            self._of(self.finished, record.type, status.value).inc()
            if record.started_at is not None:
                self._of(self.duration, record.type).observe(
                    max(0.0, (record.finished_at - record.started_at).total_seconds())
                )
            if status is TaskStatus.FAILED:
                self._blender_failure(record)

    def _first(self, record: TaskRecord) -> bool:
        """Whether this is the first running commit of the task seen here (its start)."""
        with self._lock:
            if record.id in self._started:
                return False
            self._started[record.id] = None
            if len(self._started) > 10_000:
                self._started.popitem(last=False)
            return True

    def _blender_failure(self, record: TaskRecord) -> None:
        if record.type == "render" and record.error and record.error.type in BLENDER_FAILURES:
            self._of(self.blender_failures, record.error.type).inc()

    def frame_landed(self, seconds: float | None) -> None:
        self.frames.inc()
        if seconds is not None:
            self.frame_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoreGauges(Collector):
    """Gauges read at scrape time from what `state()` reports (the stores, the pool, disks)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def describe(self) -> Iterable[Metric]:
        return []  # computed at each scrape

    def collect(self) -> Iterable[Metric]:
        s = self.state()
        yield _labelled("pi_render_tasks", "Task records by status", ["status"],
                        {(k,): v for k, v in s["records"].items()})  # fmt: skip
        yield _labelled("pi_render_tasks_dead", "Failed tasks waiting for a person", [],
                        {(): s["records"].get("failed", 0)})  # fmt: skip
        yield _labelled("pi_render_tasks_running", "Tasks running in this daemon", [],
                        {(): s["running"]})  # fmt: skip
        depth = {(label, state): n for label, q in s["queues"].items()
                 for state, n in q.items() if isinstance(n, int)}  # fmt: skip
        yield _labelled("pi_render_queue_depth", "Queued tasks per label: waiting per lane, "
                        "delayed (retries), taken", ["label", "state"], depth)  # fmt: skip
        yield _labelled("pi_render_label_paused", "1 when a label is paused", ["label"],
                        {(label,): int(p) for label, p in s["paused"].items()})  # fmt: skip
        yield _labelled("pi_render_workers_up", "Live worker threads per label", ["label"],
                        {(label,): w["alive"] for label, w in s["workers"].items()})  # fmt: skip
        yield _labelled("pi_render_workers_configured", "Worker threads configured per label",
                        ["label"], {(label,): w["configured"]
                                    for label, w in s["workers"].items()})  # fmt: skip
        yield _labelled(
            "pi_render_free_bytes",
            "Free bytes on a disk the daemon writes",
            ["disk"],
            {(k,): v for k, v in s["free"].items() if v is not None},
        )
        yield _labelled(
            "pi_render_build_info",
            "Always 1: the versions in its labels",
            ["version", "blender"],
            {(s["version"], s["blender"] or "none"): 1},
        )
        yield _labelled("pi_render_gpu_devices", "GPUs Blender sees here (1 each)",
                        ["backend", "name", "id"], {(g["backend"], g["name"], g["id"]): 1
                                                    for g in s.get("gpus", [])})  # fmt: skip
        if s.get("hosts") is not None:
            yield _labelled("pi_render_hosts", "Farm hosts by state", ["state"],
                            {(k,): v for k, v in s["hosts"].items()})  # fmt: skip


def _labelled(name: str, doc: str, labels: list[str],
              values: Mapping[Any, float]) -> GaugeMetricFamily:  # fmt: skip
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), float(value))
    return family
