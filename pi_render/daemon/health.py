"""What `pi-render health` (`GET /health`) says of a daemon: workers, queues, Blenders, the
sandbox, records, disks and, in farm mode, this host and its database; and what a farm host
publishes of itself (`pi-render hosts`)."""

import os
from typing import TYPE_CHECKING, Any

from pi_render import __version__
from pi_render.daemon.stores import offered_tags
from pi_render.processor.blender import BlenderInstall, describe
from pi_render.task.output_space import free_bytes

if TYPE_CHECKING:
    from pi_render.daemon.core import Daemon


def health_report(daemon: "Daemon") -> dict[str, Any]:
    d = daemon
    workers = d.pool.status()
    degraded = [label for label, w in workers.items() if w["alive"] < w["configured"]]
    blender = d.env.blender
    farm = d.stores.farm
    return {
        "status": "degraded" if degraded or d.stopping else "ok",
        "stopping": d.stopping,
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(d.clock.monotonic() - d.started_at, 3),
        "data_dir": str(d.settings.data_dir),
        "socket": str(d.settings.socket),
        "workers": workers,
        "degraded_labels": degraded,
        "queues": {label: q.depth() for label, q in list(d.router.queues.items())},
        "running": len(d.running),
        "held": d.running.held(),  # paused by pi-render itself, and why
        "blender": None if blender is None else {
            "kind": blender.kind, "path": blender.path, "version": blender.version},
        "blenders": describe(d.env.blenders),
        "gpus": d.env.gpus.describe() if d.env.gpus is not None else None,
        "sandbox": d.env.sandbox.describe() if d.env.sandbox else None,
        "records": d.records.count_by_status(),
        "stale_heartbeats": d.service.stale(3 * d.settings.heartbeat_s),
        "hooks_owed": len(d.outbox.owed()),
        "capabilities": {label: d.capabilities(label) for label in list(d.router.queues)},
        "disk_free_bytes": {
            "data_dir": free_bytes(d.settings.data_dir)[0],
            "output_root": free_bytes(d.settings.outputs)[0],
        },
        "farm": None if farm is None else {
            "host": farm.hosts.name, "shared_dir": str(d.settings.paths.common),
            "outbox_frames": d.frames.kept()},
    }  # fmt: skip


def host_info(daemon: "Daemon", blender: BlenderInstall | None) -> dict[str, Any]:
    """What `pi-render hosts` shows of this one (refreshed with each host beat)."""
    d, farm = daemon, daemon.settings.farm
    gpus = getattr(getattr(d, "env", None), "gpus", None)  # a first beat may come before env
    seen = gpus.devices() if gpus is not None else []
    return {"tags": farm.tags if farm else [], "pid": os.getpid(), "version": __version__,
            "blender": None if blender is None else {"path": blender.path,
                                                     "version": blender.version},
            "blenders": describe(getattr(getattr(d, "env", None), "blenders", [])),
            "gpus": [g.model_dump() for g in seen],
            "workers": {label: n for label, n in d.settings.workers.items() if n},
            "capabilities": {label: {**d.capabilities(label),
                                     "tags": offered_tags(d.settings, label, seen)}
                             for label, n in d.settings.workers.items() if n},
            "running": d.running.ids()}  # fmt: skip


def metrics_state(daemon: "Daemon") -> dict[str, Any]:
    """What the scrape-time gauges read (see pi_render/metrics.py)."""
    d = daemon
    health = d.health()
    farm = d.stores.farm
    hosts = None
    if farm is not None:
        states = [host["state"] for host in farm.hosts.listing()]
        hosts = {state: states.count(state) for state in ("online", "offline", "stopped")}
    paused = {label: queue.paused for label, queue in list(d.router.queues.items())}
    blender = health["blender"]["version"] if health["blender"] else None
    return {"records": health["records"], "running": health["running"],
            "queues": health["queues"], "paused": paused, "workers": health["workers"],
            "free": {"data_dir": health["disk_free_bytes"]["data_dir"],
                     "output": health["disk_free_bytes"]["output_root"]},
            "version": health["version"], "blender": blender, "hosts": hosts,
            "gpus": (health["gpus"] or {}).get("devices", [])}  # fmt: skip
