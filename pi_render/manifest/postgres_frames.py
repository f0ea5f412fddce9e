"""The frame ledger on PostgreSQL (farm mode): one row per (job, frame), so each frame of a job
is recorded once however many hosts rendered it. A write names the attempt it holds and lands
only while the task's record still has that attempt: a host whose lease ran out (paused, cut
off) cannot record over what the host that took its chunk over has done.

While the database is unreachable, a landed frame is kept in a local durable outbox (SQLite in
this host's data dir) and the render goes on; `flush` reports the outbox once the database is
back. A report whose attempt is no longer current is refused as such, and its frame is kept
only where the ledger has none for that frame yet (Flamenco's upstream buffer, fenced)."""

import json
import logging
from pathlib import Path

from pi_render.errors import StaleAttempt
from pi_render.farm.db import Connection, FarmDatabase, FarmUnreachable
from pi_render.farm.relay import announce_frame
from pi_render.manifest.base import DurableJsonTable
from pi_render.manifest.frames import FrameOutput, Holder

log = logging.getLogger(__name__)

HELD = "EXISTS (SELECT 1 FROM tasks WHERE id = %(task)s AND attempts = %(attempt)s " \
       "AND status = 'running')"  # fmt: skip
INSERT = ("INSERT INTO frames (job, frame, task_id, attempt, host, body) "
          "SELECT %(job)s, %(frame)s, %(task)s, %(attempt)s, %(host)s, %(body)s ")  # fmt: skip


class PostgresFrameLedger:
    def __init__(self, db: FarmDatabase, host: str, outbox: Path | None = None) -> None:
        self.db, self.host = db, host
        self._outbox = DurableJsonTable(outbox, "frames") if outbox is not None else None

    def fence(self, holder: Holder) -> None:
        """Raises StaleAttempt unless `holder` still runs its task. While the database is away
        the render goes on (its frames wait in the outbox; the report decides)."""
        try:
            row = self.db.run(
                lambda conn: conn.execute(
                    f"SELECT {HELD}", {"task": holder.task_id, "attempt": holder.attempt}
                ).fetchone()
            )
        except FarmUnreachable:
            if self._outbox is None:
                raise
            return
        if not (row and row[0]):
            raise StaleAttempt(f"attempt {holder.attempt} of task {holder.task_id} is no longer "
                               "this host's: another host has taken it over")  # fmt: skip

    def put(self, key: str, output: FrameOutput, holder: Holder | None = None) -> None:
        """Record a landed frame; only the task's current attempt may (re)write it.

        Raises:
            StaleAttempt: the write was refused.
        """
        try:
            self.flush()
            self._put(key, output, holder)
        except FarmUnreachable:
            if self._outbox is None or holder is None:
                raise
            entry = {"key": key, "task": holder.task_id, "attempt": holder.attempt,
                     "output": output.model_dump(mode="json")}  # fmt: skip
            self._outbox.stage(f"{holder.task_id}/{holder.attempt}/{output.frame:+011d}", entry)
            self._outbox.commit()
            log.warning("farm database unreachable: frame %d kept in the local outbox",
                        output.frame, extra={"task_id": holder.task_id})  # fmt: skip

    def _put(self, key: str, output: FrameOutput, holder: Holder | None,
             only_if_absent: bool = False) -> None:  # fmt: skip
        task, attempt = holder if holder is not None else (key, 0)
        params = {"job": key, "frame": output.frame, "task": task, "attempt": attempt,
                  "host": self.host, "body": output.model_dump_json()}  # fmt: skip
        if only_if_absent:
            sql = INSERT + "ON CONFLICT (job, frame) DO NOTHING"
        else:
            fenced = HELD if holder is not None else "true"
            sql = (INSERT + f"WHERE {fenced} ON CONFLICT (job, frame) DO UPDATE SET task_id = "
                   "EXCLUDED.task_id, attempt = EXCLUDED.attempt, host = EXCLUDED.host, "
                   f"body = EXCLUDED.body WHERE {fenced}")  # fmt: skip

        def put(conn: Connection) -> int:
            written: int = conn.execute(sql, params).rowcount
            if written:
                announce_frame(conn, key, output.frame)  # other hosts' dashboards
            return written

        if self.db.run(put) == 0 and not only_if_absent:
            raise StaleAttempt(f"frame {output.frame} not recorded: attempt {attempt} of task "
                               f"{task} is no longer this host's")  # fmt: skip

    def flush(self) -> int:
        """Report what the outbox kept while the database was away; returns how many frames.

        Raises:
            FarmUnreachable: still away (what is left stays kept).
        """
        if self._outbox is None:
            return 0
        rows = self._outbox.query("SELECT key, value FROM frames ORDER BY key")
        for name, text in rows:
            entry = json.loads(text)
            output = FrameOutput.model_validate(entry["output"])
            holder = Holder(entry["task"], int(entry["attempt"]))
            try:
                self._put(entry["key"], output, holder)
            except StaleAttempt:  # taken over meanwhile: only a frame nobody has recorded
                self._put(entry["key"], output, holder, only_if_absent=True)
                log.warning("outbox report refused (the attempt was taken over); frame %d kept "
                            "only if no other host had it", output.frame,
                            extra={"task_id": holder.task_id})  # fmt: skip
            self._outbox.delete(name)
            self._outbox.commit()
        if rows:
            log.info("reported %d frame(s) kept while the farm database was away", len(rows))
        return len(rows)

    def kept(self) -> int:
        """Frames waiting in the local outbox to be reported."""
        if self._outbox is None:
            return 0
        return len(self._outbox.query("SELECT key FROM frames"))

    def get(self, key: str) -> list[FrameOutput]:
        rows = self.db.run(
            lambda conn: conn.execute(
                "SELECT body FROM frames WHERE job = %s ORDER BY frame", (key,)
            ).fetchall()
        )
        return [FrameOutput.model_validate_json(row[0]) for row in rows]

    def forget_task(self, task_id: str) -> None:
        self.db.run(
            lambda conn: conn.execute(
                "DELETE FROM frames WHERE job = %s OR task_id = %s", (task_id, task_id)
            )
        )

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.close()
