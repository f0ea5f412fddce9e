"""Which backend holds what: SQLite files under the data dir (the embedded default), or, with
`[farm]`, the farm's PostgreSQL database for everything the hosts share (records, queues, the
frame ledger, hosts, once-per-farm slots, workflow runs). What stays per host in both: cron
fire times (the slots decide who fires) and the hook outbox (the host that wrote a task's end
owes its hooks, durably)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pi_render.api.events import EventLog
from pi_render.clock import Clock
from pi_render.config import Settings
from pi_render.controls import pool_capabilities
from pi_render.cron.store import CronStore
from pi_render.hooks.outbox import HookOutbox
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.frames import FrameLedger, FrameStore
from pi_render.manifest.records import TaskRecordManifest
from pi_render.processor.context import StopReason
from pi_render.processor.gpu import GpuDevice
from pi_render.queue.router import Router
from pi_render.task.record import TaskRecord, TaskStatus
from pi_render.workers.running import RunningTasks
from pi_render.workflows import WorkflowRuns

if TYPE_CHECKING:
    from pi_render.farm.db import FarmDatabase
    from pi_render.farm.hosts import HostRegistry, SlotClaims
    from pi_render.farm.policy import FailurePolicy
    from pi_render.farm.relay import RemoteProgress
    from pi_render.queue.postgres import QueueWakeups


@dataclass
class FarmParts:
    db: "FarmDatabase"
    wakeups: "QueueWakeups"
    hosts: "HostRegistry"
    slots: "SlotClaims"
    policy: "FailurePolicy"
    progress: "RemoteProgress | None" = None  # started by follow_farm


@dataclass
class Stores:
    records: RecordStore
    router: Router
    frames: FrameStore
    cron: CronStore
    outbox: HookOutbox
    workflow_runs: WorkflowRuns
    farm: FarmParts | None = None

    def close(self) -> None:
        if self.farm is not None and self.farm.progress is not None:
            self.farm.progress.close()
        self.router.close()
        self.records.close()
        self.frames.close()
        self.cron.close()
        self.outbox.close()
        self.workflow_runs.close()
        if self.farm is not None:
            self.farm.hosts.stop()
            self.farm.wakeups.close()
            self.farm.db.close()


def open_stores(settings: Settings, clock: Clock, host_info: Callable[[], dict[str, Any]],
                gpus: list[GpuDevice] | None = None) -> Stores:  # fmt: skip
    """`gpus`: what GPU discovery found (farm mode: a host with one claims GPU work).

    Raises StorageError (FarmUnreachable) when the farm database does not answer."""
    paths = settings.paths
    cron, outbox = CronStore(paths.cron), HookOutbox(paths.outbox, settings.hooks)
    if settings.farm is None:
        return Stores(
            TaskRecordManifest(paths.records),
            Router(settings, clock=clock),
            FrameLedger(paths.frames),
            cron,
            outbox,
            WorkflowRuns(paths.workflows),
        )
    from pi_render.farm.db import FarmDatabase
    from pi_render.farm.hosts import HostRegistry, SlotClaims
    from pi_render.farm.kv import PostgresJsonTable
    from pi_render.farm.policy import FailurePolicy
    from pi_render.manifest.postgres import PostgresRecordStore
    from pi_render.manifest.postgres_frames import PostgresFrameLedger
    from pi_render.queue.postgres import PostgresTaskQueue, QueueWakeups

    farm = settings.farm
    db = FarmDatabase(farm.database, farm.password(), pool_size=farm.pool_size)
    db.open()
    wakeups = QueueWakeups(db)
    host = farm.host_name
    router = Router(settings, queue_factory=lambda label: PostgresTaskQueue(
        db, label, host, wakeups, lease_s=farm.lease_s,
        tags=offered_tags(settings, label, gpus or [])), open_labels=True)  # fmt: skip
    hosts = HostRegistry(db, host, host_info, farm.host_timeout_s)
    policy = FailurePolicy(db, hosts, farm.max_hosts_per_chunk, farm.blocklist_after)
    parts = FarmParts(db, wakeups, hosts, SlotClaims(db, host), policy)
    frames = PostgresFrameLedger(db, host, paths.farm_outbox)
    runs = WorkflowRuns(paths.workflows, PostgresJsonTable(db, "workflow_runs"))  # any host's
    return Stores(PostgresRecordStore(db), router, frames, cron, outbox, runs, farm=parts)


def offered_tags(settings: Settings, label: str, gpus: list[GpuDevice]) -> list[str]:
    """What this host's pool of `label` offers in farm claims: the farm's and the label's
    tags, and `gpu` when it has one."""
    caps = pool_capabilities(label, settings.capabilities, [], gpus)
    farm_tags = settings.farm.tags if settings.farm is not None else []
    return sorted({*farm_tags, *caps["tags"], *(["gpu"] if caps["gpu"] else [])})


def follow_farm(stores: Stores, waiters: Callable[[TaskRecord], None], events: EventLog,
                running: RunningTasks) -> None:  # fmt: skip
    """Hear what other hosts do: a final move answers the clients waiting here, and a task
    cancelled elsewhere that runs here is stopped (its Blender with it); every change and
    frame reaches this host's event stream (farm/relay.py)."""
    from pi_render.farm.relay import RemoteProgress

    assert stores.farm is not None

    def on_final(record: TaskRecord) -> None:
        waiters(record)
        if record.status is TaskStatus.CANCELLED:
            running.request_stop(record.id, StopReason.CANCEL)

    add = getattr(stores.records, "add_final_listener")
    add(on_final)
    stores.farm.progress = RemoteProgress(stores.farm.db, stores.records.find,
                                          events.on_record, events.on_frame)  # fmt: skip
    stores.farm.progress.start()
