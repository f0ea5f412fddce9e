"""The composition root: settings → lock, records, queues, workers, API; then serve until told."""

import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from pi_render import __version__
from pi_render.api.access import AccessPolicy, AuditLog
from pi_render.api.app import create_app
from pi_render.api.connections import ConnectionGuard
from pi_render.api.events import EventLog
from pi_render.api.fast_submit import FastSubmit
from pi_render.api.server import SocketServer, bind_unix_socket, make_server, socket_gid
from pi_render.api.waiters import FinalStateWaiters
from pi_render.clock import Clock, SystemClock
from pi_render.config import Settings, load_settings
from pi_render.controls import pool_capabilities
from pi_render.daemon.file_modes import make_private
from pi_render.daemon.health import health_report, host_info, metrics_state
from pi_render.daemon.lock import DataDirLock
from pi_render.daemon.recovery import recover, release_waiting
from pi_render.daemon.sdnotify import sd_notify, watchdog_interval_s
from pi_render.daemon.stores import follow_farm, open_stores
from pi_render.errors import ConfigError, PiRenderError
from pi_render.hooks.worker import HookWorker
from pi_render.manifest.contract import TaskData
from pi_render.metrics import Metrics
from pi_render.processor.base import ProcessorEnv
from pi_render.processor.blender import find_blenders
from pi_render.processor.context import StopReason
from pi_render.processor.gpu import discover_gpus
from pi_render.processor.sandbox import find_sandbox
from pi_render.processor.trial import trial_frame_bytes
from pi_render.retry import RetryPolicies
from pi_render.service import SubmitControls, TaskService
from pi_render.task.base import task_type
from pi_render.task.record import TaskRecord
from pi_render.workers.cron_worker import BuiltinJob, CronWorker
from pi_render.workers.periodic import (
    WatchFolder,
    forget_files,
    maintain_queues,
    prune_old_records,
)
from pi_render.workers.pool import WorkerPool
from pi_render.workers.queue_worker import QueueWorker
from pi_render.workers.running import RunningTasks

log = logging.getLogger(__name__)


def import_task_modules(names: list[str]) -> None:
    """Import extra modules so their task types and processors register themselves."""
    import pi_render.processor  # noqa: F401  (built-in task types and processors)

    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"key 'task_modules': cannot import {name!r}: {exc}") from None


class Daemon:
    """Owns every long-lived part; `run()` blocks until SIGTERM/SIGINT and returns an exit code."""

    # settings a SIGHUP applies; the others (data dir, socket, workers…) need a restart
    RELOADABLE = ("cron", "hooks", "retry", "limits", "requires", "capabilities", "timeouts",
                  "source_roots", "output_roots", "roles", "max_queued_per_uid", "min_free_bytes",
                  "notify_command", "render_timeout_s", "render_stall_timeout_s",
                  "render_stop_grace_s", "allow_blend_scripts", "log_level")  # fmt: skip

    def __init__(
        self, settings: Settings, clock: Clock | None = None, config_path: Path | None = None
    ) -> None:
        self.config_path = config_path
        self.settings = settings
        self.clock = clock or SystemClock()
        self.lock = DataDirLock(settings.paths.lock)
        self.started_at = self.clock.monotonic()
        self._stopping = threading.Event()
        self._reload_lock = threading.Lock()
        self._server: SocketServer | None = None
        self.audit: AuditLog | None = None
        self._capabilities: dict[str, dict[str, Any]] = {}

    def run(self) -> int:
        settings = self.settings
        if os.geteuid() == 0:
            log.warning("running as root: run pi-render as its own user (see systemd/"
                        "pi-render.service); Blender is started as %s inside its sandbox",
                        settings.render_user)  # fmt: skip
        self.lock.acquire(settings.socket)
        try:
            import_task_modules(settings.task_modules)
            blenders = find_blenders(settings.blender, [b.path for b in settings.blenders])
            blender = blenders[0] if blenders else None  # the default
            self.running = RunningTasks()
            sandbox = find_sandbox(settings.sandbox, settings.render_user)
            gpus = discover_gpus(blenders, sandbox, settings.blender_env_keep)
            if settings.farm is not None:
                gpus.wait()  # a farm host's claims say whether it has a GPU
            self.stores = open_stores(settings, self.clock, partial(host_info, self, blender),
                                      gpus.devices())  # fmt: skip
            stores = self.stores
            self.records, self.router, self.frames = stores.records, stores.router, stores.frames
            self.cron_store, self.outbox = stores.cron, stores.outbox
            self.workflow_runs = stores.workflow_runs
            self.records.add_before_final(self.outbox.before_final)
            self.records.add_listener(self.outbox.after_commit)
            self.retry = RetryPolicies(settings.retry)
            self.cron: CronWorker | None = None
            for job in settings.cron:
                try:
                    task_type(job.task)
                except PiRenderError as exc:
                    raise ConfigError(f"cron job {job.name!r}: {exc}") from None
            farm = settings.farm
            self.env = ProcessorEnv(settings, blender, self.frames, sandbox,
                                    host=farm.host_name if farm else None,
                                    blenders=blenders, gpus=gpus)  # fmt: skip
            self.service = TaskService(
                self.records, self.router, self.running, self.clock, settings.paths,
                settings.outputs, controls=self._controls(settings),
                workflow_runs=self.workflow_runs, forget_files=self._forget_files,
                frames=self.frames, farm=farm is not None,
            )  # fmt: skip
            self.metrics = Metrics(partial(metrics_state, self))
            self.records.add_listener(self.metrics.on_record)
            self.events = EventLog()
            self.records.add_listener(self.events.on_record)
            self.env.on_frame = self._frame_landed
            waiters = FinalStateWaiters()
            self.records.add_listener(waiters)
            self.records.add_listener(self.service.on_record)
            if stores.farm is not None:
                follow_farm(stores, waiters, self.events, self.running)
                stores.farm.hosts.start()
            self.recover()
            self.pool = self._build_pool()
            sock = bind_unix_socket(settings.socket, socket_gid(settings.socket_group))
            sock_gid = settings.socket.stat().st_gid
            try:
                access = self._access(sock_gid)
                app = create_app(self.service, waiters, self.health, self.queues,
                                 self.cron_listing, {w.name: w for w in settings.workflows},
                                 settings.max_request_bytes, access, self.hosts, self._unblock,
                                 self.metrics.render, self.events)  # fmt: skip
                fast = FastSubmit(app, self.service, *access, settings.max_request_bytes)
                guard = ConnectionGuard(settings.header_timeout_s, settings.max_connections_per_uid)
                self._server = make_server(fast, guard)
                signal.signal(signal.SIGTERM, self._on_signal)
                signal.signal(signal.SIGINT, self._on_signal)
                signal.signal(signal.SIGHUP, self._on_sighup)
                self.pool.start()
                make_private(settings.data_dir)
                sd_notify("READY=1")  # the socket is listening: connections wait in its backlog
                self._start_watchdog()
                log.info(
                    "pi-render %s ready",
                    __version__,
                    extra={"socket": str(settings.socket), "data_dir": str(settings.data_dir)},
                )
                self._server.run(sockets=[sock])
                fast.close()
            finally:
                sock.close()
                settings.socket.unlink(missing_ok=True)
            if not self._stopping.is_set():  # the server ended by itself: still drain
                self.pool.stop(settings.shutdown_grace_s)
            self.stores.close()
            if self.audit is not None:
                self.audit.close()
        finally:
            self.lock.release()
        log.info("pi-render stopped")
        return 0

    def recover(self) -> None:
        recover(self.records, self.router, farm=self.settings.farm is not None)
        release_waiting(self.records, self.service)
        if self.service.jobs is not None:
            for job in self.records.unfinished():
                if job.chunks:  # a chunk's end the job did not hear of (a crash between)
                    self.service.jobs.update(job.id)

    def _build_pool(self) -> WorkerPool:
        pool = WorkerPool(self.running)
        policy = self.stores.farm.policy if self.stores.farm is not None else None
        host = self.env.host  # farm mode: a record's `worker` says which host runs it
        gpus = self.env.gpus.count_for(self.env.blender) if (
            self.settings.gpu_per_worker and self.env.gpus) else None  # fmt: skip
        for label, count in self.settings.workers.items():
            if gpus is not None and label == "render":
                count = gpus or count
            if count <= 0:
                continue
            queue = self.router.queue_for(label)
            for index in range(count):
                name = f"{host}/{label}-{index}" if host else f"{label}-{index}"
                slot = index if gpus and label == "render" else None
                make = partial(QueueWorker, name, queue, self.records, self.running, self.clock,
                               env=self.env, retry=self.retry,
                               timeouts=self._timeouts, policy=policy,
                               heartbeat_s=self.settings.heartbeat_s, gpu_slot=slot)  # fmt: skip
                pool.add(label, make)
        pool.add("cron", self._make_cron)
        pool.add("hooks", partial(HookWorker, self.outbox, self.records, self.clock))
        return pool

    def _retention(self) -> None:
        now = self.clock.now()
        prune_old_records(self.records, self.settings, now, self._forgetters())
        cutoff = now - timedelta(days=self.settings.retention_days)
        self.workflow_runs.prune(cutoff, lambda task_id: self.records.find(task_id) is not None)

    def _timeouts(self) -> dict[str, float]:
        return self.settings.timeouts

    def _forget_files(self, record: TaskRecord) -> None:
        forget_files(self.settings, record, self._forgetters())

    def _forgetters(self) -> list[Callable[[str], None]]:
        """What the other stores keep of a task, dropped when it is forgotten or pruned."""
        stores: tuple[TaskData, ...] = (self.frames, self.outbox)
        return [store.forget_task for store in stores]

    def _make_cron(self) -> CronWorker:
        settings = self.settings
        queues = list(self.router.queues.values())
        builtins = [
            BuiltinJob("maintenance", settings.maintenance_schedule,
                       lambda: maintain_queues(queues)),
            BuiltinJob("retention", settings.retention_schedule, self._retention),
        ]  # fmt: skip
        if self.service.jobs is not None:  # a job whose last update was lost catches up
            builtins.append(BuiltinJob("job-sweep", "* * * * *", self.service.jobs.sweep))
        if settings.watch.inbox is not None:
            watch = WatchFolder(settings.watch.inbox, self.service, self.records, self.clock,
                                settings.watch.settle_s)  # fmt: skip
            builtins.append(BuiltinJob("watch-folder", settings.watch.schedule, watch.scan))
        farm = self.stores.farm
        claim = farm.slots.claim if farm is not None else (lambda name, slot: True)
        self.cron = CronWorker(settings.cron, builtins, self.cron_store, self.service,
                               self.records, self.clock, claim)  # fmt: skip
        return self.cron

    def hosts(self) -> list[dict[str, Any]]:
        """Every host of the farm; a single host lists itself."""
        farm = self.stores.farm
        if farm is not None:
            return farm.hosts.listing()
        return [{"name": "local", "state": "online", **host_info(self, self.env.blender)}]

    def _unblock(self, job: str, host: str) -> dict[str, Any]:
        farm = self.stores.farm
        if farm is None:
            raise ConfigError("not in farm mode: there are no blocklists ([farm] in the config)")
        return {"job": job, "host": host, "lifted": farm.policy.unblock(job, host)}

    def cron_listing(self) -> list[dict[str, Any]]:
        return self.cron.listing() if self.cron is not None else []

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():
            log.warning("second stop signal: stopping running tasks now")
            self.running.stop_all(StopReason.SHUTDOWN)
            return
        self._stopping.set()
        sd_notify("STOPPING=1")
        log.info("stop signal %s: draining workers", signal.Signals(signum).name)
        threading.Thread(target=self._drain, name="shutdown", daemon=True).start()

    def _controls(self, settings: Settings) -> SubmitControls:
        roots = (tuple(settings.source_roots), tuple(settings.output_roots))
        if settings.farm is not None:  # every host must reach a render's outputs: the share
            roots = (roots[0], (settings.paths.common,))
        farm = self.stores.farm
        offered: Callable[[str, bool], dict[str, Any] | list[dict[str, Any]]] = (
            (lambda label, gpu: farm.hosts.pools(label)) if farm is not None else self._offered
        )
        return SubmitControls(settings.limits, settings.requires, offered, roots,
                              settings.max_queued_per_uid, settings.min_free_bytes,
                              settings.allow_missing, settings.max_snapshot_bytes,
                              bool(self.env.sandbox and self.env.sandbox.bwrap),
                              settings.max_args_bytes, settings.quota_bytes_per_uid,
                              settings.chunk_size, self.env.farm_form,
                              partial(trial_frame_bytes, self.env))  # fmt: skip

    def _access(self, sock_gid: int) -> tuple[AccessPolicy, AuditLog]:
        self.access_policy = AccessPolicy(self.settings.roles, sock_gid)
        self.audit = AuditLog(self.settings.paths.audit, self.env.host)
        return self.access_policy, self.audit

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=self.reload, name="reload", daemon=True).start()

    def reload(self) -> None:
        """Re-read the config file and apply what can change live; a bad file changes nothing."""
        with self._reload_lock:  # one reload at a time, however many SIGHUPs arrive
            self._reload()

    def _reload(self) -> None:
        sd_notify("RELOADING=1")
        try:
            new = load_settings(self.config_path)
            for job in new.cron:
                task_type(job.task)
        except PiRenderError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            sd_notify("READY=1")
            return
        fixed = [n for n in ("data_dir", "socket", "workers") if getattr(new, n) != getattr(
            self.settings, n)]  # fmt: skip
        # a new Settings, swapped in whole: a worker reads either the old one or the new one,
        # never a mix (nothing changes a Settings in place: the model is frozen)
        self.settings = self.settings.model_copy(
            update={name: getattr(new, name) for name in self.RELOADABLE}
        )
        self.env.settings = self.settings
        if fixed:
            log.warning("reload: %s change only with a restart", ", ".join(fixed))
        self.retry.update(new.retry)
        self.outbox.hooks[:] = new.hooks
        self._capabilities.clear()
        if self.env.gpus is not None:
            self.env.gpus.start()  # GPUs or their drivers may have changed
        self.service.reconfigure(self._controls(new))
        self.access_policy.roles = new.roles
        logging.getLogger().setLevel(new.log_level)
        self.pool.restart("cron")  # picks up the new jobs; fire times persist
        log.info("config reloaded", extra={"config": str(self.config_path)})
        sd_notify("READY=1")

    def _start_watchdog(self) -> None:
        """Ping systemd's watchdog only while every worker thread is alive."""
        interval = watchdog_interval_s()
        if interval is None:
            return

        def ping() -> None:
            while not self._stopping.wait(interval):
                workers = self.pool.status()
                if all(w["alive"] == w["configured"] for w in workers.values()):
                    sd_notify("WATCHDOG=1")
                else:
                    log.warning("watchdog not pinged: a worker thread is down")

        threading.Thread(target=ping, name="watchdog", daemon=True).start()

    def _drain(self) -> None:
        self.pool.stop(self.settings.shutdown_grace_s)
        if self._server is not None:
            self._server.should_exit = True

    def capabilities(self, label: str, wait: bool = False) -> dict[str, Any]:
        """A pool's capabilities, found once per (re)load and GPU discovery: every submit asks
        for them. `wait`: for discovery to end (a submit); health and host beats do not."""
        if label in self._capabilities:
            return self._capabilities[label]
        gpus = self.env.gpus
        done = gpus is None or gpus.wait(180.0 if wait else 0.0)
        caps = pool_capabilities(label, self.settings.capabilities, self.env.versions(),
                                 gpus.devices() if gpus is not None else [])  # fmt: skip
        if done:
            self._capabilities[label] = caps
        return caps

    def _offered(self, label: str, gpu: bool) -> dict[str, Any]:
        """What a submit checks a task's needs against (a GPU task waits for GPU discovery,
        which ends soon after the start); a label with no workers offers none."""
        return self.capabilities(label, wait=gpu) if label in self.settings.workers else {}

    def queues(self) -> dict[str, Any]:
        workers = self.pool.status()
        return {
            label: {**queue.depth(), "paused": queue.paused, "workers": workers.get(label, {})}
            for label, queue in list(self.router.queues.items())
        }

    def _frame_landed(self, task_id: str, frame: int, seconds: float | None) -> None:
        self.metrics.frame_landed(seconds)
        self.events.on_frame(task_id, frame)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def health(self) -> dict[str, Any]:
        return health_report(self)
