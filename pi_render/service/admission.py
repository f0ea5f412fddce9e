"""Admission: the checks that count what is already there (qualifiers, dedup, the per-uid cap,
quotas, limits). They run one submit at a time, after the snapshot, just before the commit."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pi_render.controls import (
    NotQualified,
    Requirements,
    TooManyQueued,
    check_limit,
    find_duplicate,
    limit_key,
    missing,
    opens,
    version_tuple,
)
from pi_render.errors import NoConsumer
from pi_render.identity import Caller
from pi_render.manifest.contract import RecordStore
from pi_render.service.controls import SubmitControls
from pi_render.service.quotas import Quotas, record_bytes
from pi_render.task.record import TaskRecord


class Admission:
    """Decides whether prepared tasks may be written, against what the records hold now."""

    def __init__(self, records: RecordStore, controls: Callable[[], SubmitControls],
                 uploads_dir: Path) -> None:  # fmt: skip
        self.records, self.controls, self.uploads_dir = records, controls, uploads_dir

    def quotas(self) -> Quotas:
        return Quotas(self.records.bytes_of_uid, self.uploads_dir,
                      self.controls().quota_bytes_per_uid)  # fmt: skip

    def room_of(self, caller: Caller | None) -> int:
        """Bytes `caller` may still add before their quota (a snapshot copies no more)."""
        quotas = self.quotas()
        if caller is None or not quotas.applies(caller.uid) or quotas.limit is None:
            return 1 << 62
        return max(0, quotas.limit - quotas.usage(caller.uid))

    def counted(self, prepared: list[TaskRecord]) -> bool:
        """Would a limit, a dedup, a per-uid cap or a quota count these (so the next submitter
        must wait until they are written)?"""
        limits, quotas = self.controls().limits, self.quotas()
        return any(r.type in limits or r.content_key is not None or self._uid_capped(r)
                   or quotas.applies((r.submitted_by or {}).get("uid"))
                   for r in prepared)  # fmt: skip

    def _uid_capped(self, record: TaskRecord) -> bool:
        """Does `max_queued_per_uid` count this task? (Root and the daemon's user are exempt.)"""
        who = record.submitted_by
        cap = self.controls().max_queued_per_uid
        return cap is not None and who is not None and who["uid"] not in (0, os.getuid())

    def admit(self, record: TaskRecord, batch: list[TaskRecord], force: bool,
              batch_bytes: int = 0) -> TaskRecord | None:  # fmt: skip
        """Raises what refuses `record` (given the `batch` admitted before it, whose tasks of the
        same submitter keep `batch_bytes`); returns an identical task that is already there (a
        dedup), or None when it is new."""
        controls = self.controls()
        needs = {**controls.requires.get(record.type, Requirements()).model_dump(),
                 **{k: v for k, v in (record.requires or {}).items() if v}}  # fmt: skip
        if record.type == "render" and record.args.get("device") == "gpu":
            needs["gpu"] = True  # `--device gpu`: a host without one could only fail it
        offered = controls.capabilities(record.label, bool(needs.get("gpu")))
        if isinstance(offered, list) and not offered:  # farm: no online host runs the label
            raise NoConsumer(f"no online host of the farm has workers for label "
                             f"{record.label!r} (pi-render hosts)")  # fmt: skip
        pools = offered if isinstance(offered, list) else [offered]  # farm: one per host
        wanted = Requirements.model_validate(needs)
        every = [missing(wanted, pool) for pool in pools] or [missing(wanted, {
            "tags": [], "gpu": False, "blender": None, "engines": []})]  # fmt: skip
        lacks = min(every, key=len)  # what the best-placed pool lacks; [] where one qualifies
        saved_by = record.args.get("blend_version") if record.type == "render" else None
        if saved_by and not any(opens(_versions(pool), saved_by) for pool in pools):
            there = sorted({v for pool in pools for v in _versions(pool)}, key=version_tuple)
            raise NotQualified(
                f"this file was saved by Blender {saved_by}, and no Blender here opens it "
                f"(installed: {', '.join(there) or 'none'}): install Blender {saved_by} or newer "
                "and name it in [[blenders]] in the config (pi-render blenders lists them)"
            )
        if lacks:
            raise NotQualified(f"no worker pool can run this {record.type} task on label "
                               f"{record.label!r}: it lacks {', '.join(lacks)}")  # fmt: skip
        if record.content_key is not None and not force:
            existing = find_duplicate(self.records, record)
            if existing is not None:
                return existing
        who = record.submitted_by
        if who is not None and self._uid_capped(record):
            mine = sum(1 for e in batch if (e.submitted_by or {}).get("uid") == who["uid"])
            cap = controls.max_queued_per_uid or 0
            queued = self.records.live_count_of_uid(who["uid"]) + mine
            if queued >= cap:
                raise TooManyQueued(f"uid {who['uid']} already has {queued} tasks waiting "
                                    f"or running (max_queued_per_uid = {cap})")  # fmt: skip
        quotas = self.quotas()
        if who is not None and quotas.applies(who["uid"]):
            quotas.check(who["uid"], batch_bytes + record_bytes(record))
        limit = controls.limits.get(record.type)
        if limit is not None:
            record.limit_key = limit_key(limit, record, record.content_key)
            check_limit(self.records, limit, record, record.limit_key, batch)
        return None


def _versions(pool: dict[str, Any]) -> list[str]:
    """A pool's Blender versions (a farm host of an older pi-render names only its newest)."""
    if "blenders" in pool:
        return list(pool["blenders"])
    return [pool["blender"]] if pool.get("blender") else []
