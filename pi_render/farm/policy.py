"""The farm's failure policy (Flamenco's): a chunk that fails on a host is tried on another;
after failing on `max_hosts_per_chunk` distinct hosts it fails (and its job with it, listing
every host's error); a host that fails `blocklist_after` chunks of one job takes no more of
that job's chunks until someone lifts it (`pi-render farm unblock JOB HOST`). A chunk no online
host may take anymore fails with that reason instead of waiting for ever."""

import logging

from pi_render.farm.db import Connection, FarmDatabase
from pi_render.farm.hosts import HostRegistry
from pi_render.task.record import ErrorInfo, TaskRecord
from pi_render.workers.queue_worker import Verdict

log = logging.getLogger(__name__)


class FailurePolicy:
    def __init__(self, db: FarmDatabase, hosts: HostRegistry, max_hosts_per_chunk: int,
                 blocklist_after: int) -> None:  # fmt: skip
        self.db, self.hosts = db, hosts
        self.max_hosts, self.blocklist_after = max_hosts_per_chunk, blocklist_after

    def judge(self, chunk: TaskRecord, error: ErrorInfo) -> Verdict:
        assert chunk.job is not None and error.host is not None
        since_retry = chunk.errors[chunk.errors_before_retry :]  # a retry by hand starts afresh
        failed_on = {e.host for e in [*since_retry, error] if e.host is not None}
        if len(failed_on) >= self.max_hosts:
            hosts = ", ".join(sorted(failed_on))
            return Verdict(
                give_up=f"failed on {len(failed_on)} hosts ({hosts}); "
                f"max_hosts_per_chunk is {self.max_hosts}"
            )
        self._count_against(chunk.job, error.host)
        avoid = sorted(failed_on | self.blocked(chunk.job))
        able = [host for host in self.hosts.online() if host not in avoid]
        if not able:
            return Verdict(
                give_up=f"no online host may run it anymore (failed on or "
                f"blocklisted: {', '.join(avoid)})",
                avoid=avoid,
            )
        return Verdict(avoid=avoid)

    def _count_against(self, job: str, host: str) -> None:
        """Blocklist `host` for `job` once it has failed `blocklist_after` of its chunks."""

        def count(conn: Connection) -> bool:
            row = conn.execute(
                "SELECT count(*) FROM tasks WHERE job = %s AND EXISTS (SELECT 1 FROM "
                "jsonb_array_elements((body::jsonb)->'errors') AS e WHERE e->>'host' = %s)",
                (job, host)).fetchone()  # fmt: skip
            failed = int(row[0]) if row else 0
            if failed + 1 < self.blocklist_after:  # + this failure, not yet written
                return False
            added = conn.execute(
                "INSERT INTO blocklist (job, host, reason) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (job, host, f"failed {failed + 1} chunks of this job")).rowcount  # fmt: skip
            conn.execute("UPDATE queue_items SET avoid = array_append(avoid, %s) WHERE task_id "
                         "IN (SELECT id FROM tasks WHERE job = %s) AND NOT (%s = ANY(avoid))",
                         (host, job, host))  # fmt: skip
            return bool(added)

        if self.db.run(count):
            log.warning("host blocklisted for a job", extra={"host": host, "task_id": job})

    def blocked(self, job: str) -> set[str]:
        rows = self.db.run(
            lambda conn: conn.execute(
                "SELECT host FROM blocklist WHERE job = %s", (job,)
            ).fetchall()
        )
        return {row[0] for row in rows}

    def unblock(self, job: str, host: str) -> bool:
        """Lift a blocklisting: the host may take the job's chunks again."""

        def lift(conn: Connection) -> bool:
            gone = conn.execute("DELETE FROM blocklist WHERE job = %s AND host = %s",
                                (job, host)).rowcount  # fmt: skip
            conn.execute(
                "UPDATE queue_items SET avoid = array_remove(avoid, %s) WHERE task_id "
                "IN (SELECT id FROM tasks WHERE job = %s)",
                (host, job),
            )
            conn.execute(
                "SELECT pg_notify('pi_render_queue', label) FROM queue_items WHERE "
                "task_id IN (SELECT id FROM tasks WHERE job = %s)",
                (job,),
            )
            return bool(gone)

        return self.db.run(lift)
