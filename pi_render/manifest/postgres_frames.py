"""The frame ledger on PostgreSQL (farm mode): one row per (job, frame), so each frame of a job
is recorded once however many hosts rendered it. A write names the attempt it holds and lands
only while the task's record still has that attempt: a host whose lease ran out (paused, cut
off) cannot record over what the host that took its chunk over has done."""

from pi_render.errors import StaleAttempt
from pi_render.farm.db import Connection, FarmDatabase
from pi_render.manifest.frames import FrameOutput, Holder

HELD = "EXISTS (SELECT 1 FROM tasks WHERE id = %(task)s AND attempts = %(attempt)s " \
       "AND status = 'running')"  # fmt: skip


class PostgresFrameLedger:
    def __init__(self, db: FarmDatabase, host: str) -> None:
        self.db, self.host = db, host

    def fence(self, holder: Holder) -> None:
        """Raises StaleAttempt unless `holder` still runs its task."""
        row = self.db.run(lambda conn: conn.execute(
            f"SELECT {HELD}", {"task": holder.task_id, "attempt": holder.attempt}).fetchone())
        if not (row and row[0]):
            raise StaleAttempt(f"attempt {holder.attempt} of task {holder.task_id} is no longer "
                               "this host's: another host has taken it over")  # fmt: skip

    def put(self, key: str, output: FrameOutput, holder: Holder | None = None) -> None:
        """Record a landed frame; only the task's current attempt may (re)write it.

        Raises:
            StaleAttempt: the write was refused.
        """
        task, attempt = holder if holder is not None else (key, 0)
        params = {"job": key, "frame": output.frame, "task": task, "attempt": attempt,
                  "host": self.host, "body": output.model_dump_json()}  # fmt: skip
        fenced = HELD if holder is not None else "true"

        def put(conn: Connection) -> int:
            return conn.execute(
                "INSERT INTO frames (job, frame, task_id, attempt, host, body) "
                "SELECT %(job)s, %(frame)s, %(task)s, %(attempt)s, %(host)s, %(body)s "
                f"WHERE {fenced} ON CONFLICT (job, frame) DO UPDATE SET task_id = "
                "EXCLUDED.task_id, attempt = EXCLUDED.attempt, host = EXCLUDED.host, "
                f"body = EXCLUDED.body WHERE {fenced}", params).rowcount  # fmt: skip

        if self.db.run(put) == 0:
            raise StaleAttempt(f"frame {output.frame} not recorded: attempt {attempt} of task "
                               f"{task} is no longer this host's")  # fmt: skip

    def get(self, key: str) -> list[FrameOutput]:
        rows = self.db.run(lambda conn: conn.execute(
            "SELECT body FROM frames WHERE job = %s ORDER BY frame", (key,)).fetchall())
        return [FrameOutput.model_validate_json(row[0]) for row in rows]

    def forget_task(self, task_id: str) -> None:
        self.db.run(lambda conn: conn.execute(
            "DELETE FROM frames WHERE job = %s OR task_id = %s", (task_id, task_id)))

    def close(self) -> None:
        """The database is the daemon's to close."""
