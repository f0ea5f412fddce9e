"""Farm mode end to end: several real daemons (subprocesses with their own data dirs and
sockets) share one real PostgreSQL database and one folder. A fake Blender that writes valid
PNGs and sleeps renders most jobs (the faults it plays cannot be had from real Blender on
demand); one job is rendered by real Blender over two hosts."""

import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, wait_until
from pg_cluster import PostgresCluster

from pi_render.api.client import ApiError, Client
from pi_render.task.record import TaskRecord

FAKE = Path(__file__).parent / "fakes" / "fake_blender.py"
Farm = Callable[..., list[DaemonProcess]]


@pytest.fixture
def farm(make_daemon: Callable[..., DaemonProcess], pg_url: str, tmp_path: Path) -> Farm:
    shared = tmp_path / "shared"
    shared.mkdir()

    def start(hosts: int = 3, modes: dict[int, str] | None = None, real: bool = False,
              extra: str = "", lease_s: float = 3.0, sleep: float = 0.05,
              renderers: int = 1, tags: dict[int, list[str]] | None = None,
              ) -> list[DaemonProcess]:  # fmt: skip
        daemons = []
        for index in range(1, hosts + 1):
            mode = (modes or {}).get(index, "render")
            blender = "" if real else (f'blender = "{FAKE}"\nblender_env_keep = ["PATH", '
                                       f'"FAKE_BLENDER", "FAKE_BLENDER_SLEEP"]\n')  # fmt: skip
            config = (f"{blender}render_stop_grace_s = 2\nheartbeat_s = 0.5\n{extra}"
                      f"[workers]\ndefault = 1\nrender = {renderers}\n"
                      f'[farm]\ndatabase = "{pg_url}"\nshared_dir = "{shared}"\n'
                      f'host_name = "h{index}"\nlease_s = {lease_s}\n'
                      f"host_timeout_s = {lease_s}\nblocklist_after = 2\n"
                      f"tags = {(tags or {}).get(index, [])!r}\n"
                      "[retry.render]\nmax_attempts = 6\nbase_delay_s = 0.2\n"
                      "max_delay_s = 0.5\n")  # fmt: skip
            env = {"FAKE_BLENDER": mode, "FAKE_BLENDER_SLEEP": str(sleep)}
            daemons.append(make_daemon(config, name=f"h{index}", extra_env=env))
        for daemon in daemons:
            daemon.start()
        return daemons

    return start


def frames_by_host(job: TaskRecord) -> Counter[str]:
    return Counter(frame["host"] for frame in (job.result or {})["frames"])


def saved_lines(client: Client, chunk_id: str) -> int:
    return client.log(chunk_id)[0].count("Saved: ")


def test_three_hosts_render_every_frame_of_a_job_exactly_once(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    hosts = farm(3)
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "chunk_size": 5})
    assert job.chunks == 12
    done = hosts[1].client.wait(job.id, timeout=120)  # answered on another host than submitted
    assert done.status == "completed", done.error
    frames = [frame["frame"] for frame in (done.result or {})["frames"]]
    assert sorted(frames) == list(range(1, 61))
    assert set(frames_by_host(done)) == {"h1", "h2", "h3"}, frames_by_host(done)
    chunks = hosts[2].client.chunks(job.id)
    assert len(chunks) == 12 and all(c.status == "completed" and c.attempts == 1 for c in chunks)
    assert sum(saved_lines(hosts[0].client, c.id) for c in chunks) == 60  # rendered once each
    assert {h["name"]: h["state"] for h in hosts[0].client.hosts()} == {
        "h1": "online", "h2": "online", "h3": "online"}  # fmt: skip
    assert all(Path(f["path"]).is_file() for f in (done.result or {})["frames"])
    farm_health = hosts[2].client.health()["farm"]
    assert farm_health["host"] == "h3" and farm_health["outbox_frames"] == 0
    for host in hosts:  # each chunk's scratch folder was its host's own, and is gone
        work = host.data_dir / "work"
        assert not work.exists() or not any(work.iterdir()), host.root
    audit = (hosts[0].data_dir / "audit.jsonl").read_text()
    assert '"host": "h1"' in audit and job.id in audit  # the submit, named with its host


def running_chunk_on(client: Client, job_id: str, host: str) -> TaskRecord | None:
    for chunk in client.chunks(job_id):
        if chunk.status == "running" and (chunk.worker or "").startswith(f"{host}/"):
            if (chunk.progress_detail or {}).get("frames_done", 0) >= 1:
                return chunk
    return None


def test_a_host_killed_mid_chunk_loses_only_that_chunk(farm: Farm, scenes: dict[str, Path]) -> None:
    hosts = farm(3, sleep=0.3)
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "chunk_size": 5})
    victim = wait_until(lambda: running_chunk_on(hosts[0].client, job.id, "h2"), 60,
                        "a chunk running on h2 with a frame landed")  # fmt: skip
    hosts[1].kill()
    done = hosts[0].client.wait(job.id, timeout=180)
    assert done.status == "completed", done.error
    assert sorted(f["frame"] for f in (done.result or {})["frames"]) == list(range(1, 61))
    chunks = {c.id: c for c in hosts[2].client.chunks(job.id)}
    assert chunks[victim.id].attempts == 2  # taken over after its lease ran out
    assert not (chunks[victim.id].worker or "").startswith("h2/")
    others = [c for c in chunks.values() if c.id != victim.id]
    assert all(c.attempts == 1 for c in others if not (c.worker or "").startswith("h2/"))
    size = 5
    again = saved_lines(hosts[0].client, victim.id)
    assert size <= again < 2 * size  # frames it had landed were not rendered again
    assert [h["state"] for h in hosts[0].client.hosts() if h["name"] == "h2"] == ["offline"]


def test_a_host_paused_past_its_lease_cannot_write_late(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    hosts = farm(2, sleep=0.4)
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "start_frame": 1,
                                  "end_frame": 20, "chunk_size": 10})  # fmt: skip
    victim = wait_until(lambda: running_chunk_on(hosts[0].client, job.id, "h2"), 60,
                        "a chunk running on h2")  # fmt: skip
    assert hosts[1].proc is not None
    os.kill(hosts[1].proc.pid, signal.SIGSTOP)  # its Blender goes on: a cut-off host's would
    try:
        done = hosts[0].client.wait(job.id, timeout=120)
    finally:
        os.kill(hosts[1].proc.pid, signal.SIGCONT)
    assert done.status == "completed", done.error
    wait_until(lambda: "taken over" in hosts[1].log(), 30, "h2 to learn it lost the chunk")
    chunk = hosts[0].client.get(victim.id)
    assert chunk.status == "completed" and chunk.attempts == 2
    assert (chunk.worker or "").startswith("h1/")  # h2's late writes did not overwrite it
    late = hosts[0].client.get(job.id)
    assert sorted(f["frame"] for f in (late.result or {})["frames"]) == list(range(1, 21))


def test_the_database_stopped_hard_mid_job_loses_nothing(
    farm: Farm, scenes: dict[str, Path], pg_cluster: "PostgresCluster"
) -> None:
    hosts = farm(2, sleep=1.0, lease_s=60.0)  # the outage is shorter than a lease
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "start_frame": 1,
                                  "end_frame": 30, "chunk_size": 5})  # fmt: skip

    def mid_chunk() -> bool:  # at least two frames (2 s) still to land: one lands in the outage
        return any(c.status == "running" and 1 <= (c.progress_detail or {}).get(
            "frames_done", 0) <= 3 for c in hosts[0].client.chunks(job.id))  # fmt: skip

    wait_until(mid_chunk, 60, "a chunk half rendered")
    pg_cluster.stop("immediate")  # a crash: recovery from the WAL at the next start
    try:
        with pytest.raises(Exception, match="farm database unreachable since"):
            hosts[1].client.get(job.id)  # 503, said plainly
        wait_until(lambda: any("kept in the local outbox" in h.log() for h in hosts), 30,
                   "a host to keep a frame while the database is away")  # fmt: skip
    finally:
        pg_cluster.start()
    wait_until(lambda: answers(hosts[1].client, job.id), 60, "h2 to reach the database again")
    done = hosts[1].client.wait(job.id, timeout=180)
    assert done.status == "completed", done.error
    assert sorted(f["frame"] for f in (done.result or {})["frames"]) == list(range(1, 31))
    chunks = hosts[0].client.chunks(job.id)
    # a chunk whose start the outage cut may run again, but no frame is rendered twice
    assert sum(saved_lines(hosts[0].client, c.id) for c in chunks) == 30
    assert any("reported" in h.log() for h in hosts)
    assert all(h.client.health()["status"] == "ok" for h in hosts)


def answers(client: Client, task_id: str) -> bool:
    try:
        client.get(task_id)
    except ApiError:
        return False  # 503 until its pool has a connection again
    return True


def test_a_failing_host_is_blocklisted_while_the_others_finish(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    hosts = farm(3, modes={3: "fail"})
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "start_frame": 1,
                                  "end_frame": 40, "chunk_size": 2})  # fmt: skip
    done = hosts[0].client.wait(job.id, timeout=180)
    assert done.status == "completed", done.error
    assert "h3" not in frames_by_host(done)
    listed = {h["name"]: h for h in hosts[0].client.hosts()}
    assert [b["job"] for b in listed["h3"]["blocklisted_for"]] == [job.id]
    assert hosts[0].client.unblock(job.id, "h3")["lifted"] is True
    assert not [h for h in hosts[0].client.hosts() if h["blocklisted_for"]]


def test_a_chunk_that_fails_everywhere_fails_the_job_with_each_hosts_error(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    hosts = farm(3, modes={1: "fail", 2: "fail", 3: "fail"})
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "start_frame": 1,
                                  "end_frame": 4, "chunk_size": 2})  # fmt: skip
    done = hosts[0].client.wait(job.id, timeout=120)
    assert done.status == "failed"
    failed_on = {e.host for c in hosts[0].client.chunks(job.id) for e in c.errors}
    assert failed_on == {"h1", "h2", "h3"}
    assert {e.host for e in done.errors} <= failed_on and done.error is not None


def test_three_hosts_with_one_cron_job_make_one_task_per_slot(farm: Farm) -> None:
    cron = '[[cron]]\nname = "tick"\nschedule = "* * * * * *"\ntask = "noop"\n'
    hosts = farm(3, extra=cron)

    def origins() -> list[str]:
        return [str(r.origin) for r in hosts[0].client.list(type_name="noop", limit=1000)]

    wait_until(lambda: len(set(origins())) >= 4, 30, "four cron slots to fire")
    counts = Counter(origins())
    assert counts and max(counts.values()) == 1, counts  # each slot: one task, not three
    assert all(origin.startswith("cron:tick@") for origin in counts)


def test_a_tiny_real_blender_job_spread_over_two_hosts(farm: Farm, scenes: dict[str, Path]) -> None:
    hosts = farm(2, real=True, lease_s=30.0)
    job = hosts[0].client.render({"source": str(scenes["long"]), "chunk_size": 2})
    done = hosts[1].client.wait(job.id, timeout=300)
    assert done.status == "completed", done.error
    assert sorted(f["frame"] for f in (done.result or {})["frames"]) == list(range(1, 21))
    assert set(frames_by_host(done)) == {"h1", "h2"}
    assert all(Path(f["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
               for f in (done.result or {})["frames"])  # fmt: skip


def test_concurrent_starts_migrate_the_schema_once(pg_url: str) -> None:
    import threading

    from pi_render.farm.db import FarmDatabase
    from pi_render.farm.schema import MIGRATIONS

    dbs = [FarmDatabase(pg_url) for _ in range(4)]
    threads = [threading.Thread(target=db.open) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    versions = dbs[0].run(
        lambda conn: conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    )
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]  # each once, in order
    for db in dbs:
        db.close()


def test_a_uri_with_a_password_is_refused(tmp_path: Path) -> None:
    from pi_render.config import load_settings
    from pi_render.errors import ConfigError

    config = tmp_path / "c.toml"
    config.write_text('[farm]\ndatabase = "postgresql://u:secret@db/x"\nshared_dir = "/srv"\n')
    with pytest.raises(ConfigError, match="password_file"):
        load_settings(config, env={})


def test_claims_go_only_to_hosts_that_offer_what_a_task_needs(pg_url: str) -> None:
    from pi_render.farm.db import FarmDatabase
    from pi_render.queue.postgres import PostgresTaskQueue
    from pi_render.task.record import Priority

    db = FarmDatabase(pg_url)
    db.open()
    plain = PostgresTaskQueue(db, "render", "cpu-box", None, lease_s=60)
    gpu = PostgresTaskQueue(db, "render", "gpu-box", None, lease_s=60, tags=["gpu"])
    plain.put("needs-gpu", Priority.HIGH, needs=["gpu"])
    plain.put("avoids-gpu-box", Priority.NORMAL, avoid=["gpu-box"])
    first = plain.get(timeout=0)
    assert first is not None and first.task_id == "avoids-gpu-box"  # the high one is not its
    assert plain.get(timeout=0) is None
    second = gpu.get(timeout=0)
    assert second is not None and second.task_id == "needs-gpu"
    plain.nack(first)
    assert gpu.get(timeout=0) is None  # given back, and still not for the host it avoids
    gpu.put("needs-gpu", Priority.HIGH)  # put again without needs: it keeps what it needed
    assert plain.get(timeout=0) is not None and plain.get(timeout=0) is None
    db.close()


def test_a_put_never_takes_a_row_another_host_holds(pg_url: str) -> None:
    from pi_render.farm.db import FarmDatabase
    from pi_render.queue.postgres import PostgresTaskQueue
    from pi_render.task.record import Priority

    db = FarmDatabase(pg_url)
    db.open()
    mine = PostgresTaskQueue(db, "render", "h1", None, lease_s=60)
    other = PostgresTaskQueue(db, "render", "h2", None, lease_s=60)
    mine.put("t", Priority.NORMAL)
    held = mine.get(timeout=0)
    assert held is not None
    other.put("t", Priority.NORMAL)  # another host's retry by hand: the row is h1's
    assert other.get(timeout=0) is None and mine.extend(held)
    mine.ack(held)  # h1's delivery ends; the put made meanwhile is not lost with it
    again = other.get(timeout=0)
    assert again is not None and again.task_id == "t" and not again.redelivered
    other.put("t", Priority.NORMAL)  # h2's own worker putting it back (a retry) replaces it
    assert not other.extend(again)  # that delivery is over: its ack cannot take the new row
    other.ack(again)
    last = mine.get(timeout=0)
    assert last is not None and last.task_id == "t"
    mine.ack(last)
    assert mine.get(timeout=0) is None and other.get(timeout=0) is None
    db.close()


def test_a_retry_by_hand_never_reuses_an_attempt_number() -> None:
    from datetime import datetime, timezone

    from pi_render.errors import StaleAttempt
    from pi_render.task import lifecycle
    from pi_render.task.record import ErrorInfo, TaskRecord

    now = datetime.now(timezone.utc)
    record = TaskRecord(id="t", type="render", label="render", created_at=now)
    first = lifecycle.start(record, now, "h2/render-0")
    assert first is not None and first.attempts == 1
    dead = lifecycle.fail(first, now, ErrorInfo(type="X", message="no"))
    assert dead is not None
    again = lifecycle.retry_now(dead)
    assert again is not None
    second = lifecycle.start(again, now, "h1/render-0")
    with pytest.raises(StaleAttempt):  # attempt 1's worker is fenced out as soon as it retries
        lifecycle.fenced(1, lifecycle.requeue)(again)
    assert second is not None and second.attempts == 3  # never 1 again
    assert second.retried_at_attempt == 2 and second.errors_before_retry == 1


def test_only_failures_count_towards_a_blocklist_and_names_are_one_hosts(pg_url: str) -> None:
    from datetime import datetime, timezone

    from pi_render.errors import ConfigError
    from pi_render.farm.db import FarmDatabase
    from pi_render.farm.hosts import HostRegistry
    from pi_render.farm.policy import FailurePolicy
    from pi_render.manifest.postgres import PostgresRecordStore
    from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus

    db = FarmDatabase(pg_url)
    db.open()
    hosts = HostRegistry(db, "h1", lambda: {"pid": 1}, 60.0)  # as if pid 1 (alive) were it
    hosts.start()
    with pytest.raises(ConfigError, match="in use by a live daemon"):
        HostRegistry(db, "h1", dict, 60.0).start()
    now = datetime.now(timezone.utc)
    store = PostgresRecordStore(db)
    done = {"frames": [{"frame": 1, "path": "/x", "size": 1, "sha256": "0", "host": "h1"}]}
    store.create_many([TaskRecord(id=f"c{n}", type="render", label="render", job="j",
                                  created_at=now, status=TaskStatus.COMPLETED, result=done)
                       for n in range(3)])  # fmt: skip
    policy = FailurePolicy(db, hosts, max_hosts_per_chunk=3, blocklist_after=2)
    chunk = TaskRecord(id="c9", type="render", label="render", job="j", created_at=now)
    store.create(chunk)
    error = ErrorInfo(type="RenderFailed", message="no", host="h1")
    policy.judge(chunk, error)  # its first failure: three completed chunks do not count
    assert policy.blocked("j") == set()
    failed = chunk.model_copy(update={"errors": [error]})
    store.change("c9", lambda r: failed.model_copy(update={"version": r.version}))
    policy.judge(failed, error)  # the second
    assert policy.blocked("j") == {"h1"}
    hosts.stop()
    db.close()


def test_cancelling_a_job_on_one_host_stops_its_chunks_on_the_others(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    hosts = farm(2, sleep=0.5)
    job = hosts[0].client.render({"source": str(scenes["sixty"]), "chunk_size": 5})
    remote = wait_until(lambda: running_chunk_on(hosts[0].client, job.id, "h2"), 60,
                        "a chunk running on h2")  # fmt: skip
    hosts[0].client.cancel(job.id)
    assert hosts[1].client.wait(job.id, timeout=30).status == "cancelled"
    assert hosts[0].client.wait(remote.id, timeout=30).status == "cancelled"
    wait_until(lambda: hosts[1].client.health()["running"] == 0, 30, "h2's Blender to stop")
    assert all(c.status == "cancelled" for c in hosts[0].client.chunks(job.id)
               if c.status != "completed")  # fmt: skip


def test_a_workflow_run_made_on_one_host_is_found_on_another(pg_url: str, tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from pi_render.farm.db import FarmDatabase
    from pi_render.farm.kv import PostgresJsonTable
    from pi_render.workflows import WorkflowRun, WorkflowRuns

    db = FarmDatabase(pg_url)
    db.open()
    here = WorkflowRuns(tmp_path / "a.sqlite", PostgresJsonTable(db, "workflow_runs"))
    there = WorkflowRuns(tmp_path / "b.sqlite", PostgresJsonTable(db, "workflow_runs"))
    old = datetime.now(timezone.utc) - timedelta(days=60)
    run = WorkflowRun(run_id="r1", name="w", file="/x.blend", tasks=["t1"], created_at=old)
    here.put(run)
    assert there.get("r1") == run
    assert there.prune(datetime.now(timezone.utc), known=lambda task_id: False) == 1
    with pytest.raises(Exception, match="no workflow run"):
        here.get("r1")
    assert not (tmp_path / "a.sqlite").exists()  # nothing of it was kept locally
    db.close()


def test_a_task_needing_a_tag_is_taken_only_by_a_host_that_offers_it(farm: Farm) -> None:
    hosts = farm(2, tags={2: ["special"]})
    record = hosts[0].client.submit("noop", {}, requires={"tags": ["special"]})
    done = hosts[0].client.wait(record.id, timeout=30)  # h1 has no such tag: h2 runs it
    assert done.status == "completed" and (done.worker or "").startswith("h2/")
    with pytest.raises(ApiError, match="lacks tag 'nowhere'"):
        hosts[0].client.submit("noop", {}, requires={"tags": ["nowhere"]})


def test_a_hosts_event_stream_shows_frames_another_host_renders_as_they_land(
    farm: Farm, scenes: dict[str, Path]
) -> None:
    from test_events import sse

    hosts = farm(2, sleep=0.2)
    hosts[0].client.pause("render", label=True)  # h1 renders nothing: every frame is h2's
    job = hosts[0].client.render({"source": str(scenes["tiny"]), "chunk_size": 1})
    heard: list[tuple[str, dict[str, Any]]] = []
    for _, kind, data in sse(hosts[0], after=0):
        heard.append((kind, data))
        if kind == "task" and data["id"] == job.id and data["status"] == "completed":
            break
    frames = sorted(d["frame"] for k, d in heard if k == "frame" and d["task_id"] == job.id)
    assert frames == [1, 2, 3]  # on h1's stream, though h2 rendered them
    chunks = {d["id"] for k, d in heard if k == "task" and d["job"] == job.id
              and str(d["worker"]).startswith("h2/")}  # fmt: skip
    assert len(chunks) == 3  # each of h2's chunks, told on h1's stream
    done = hosts[0].client.wait(job.id, 60)
    assert Counter(f["host"] for f in (done.result or {})["frames"]) == {"h2": 3}
