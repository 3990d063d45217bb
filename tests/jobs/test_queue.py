"""The job queue's promises, on SQLite and PostgreSQL: outbox enqueue, exactly-once claiming by
concurrent workers, leases that outlive a kill -9'd worker, retries with backoff, failure,
scheduling, dedupe, cancellation, and the access each job runs with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fhirserver.access import DenyPolicy, Principal, SmartPolicy, SystemJob, parse_scopes
from fhirserver.jobs import CANCELLED, DONE, FAILED, QUEUED, Jobs, Registry, Worker, queue


def wait_for(cond, timeout: float = 60.0, every: float = 0.05):  # noqa: ANN001, ANN201
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def _enqueue(services, kind, payload=None, **kw):  # noqa: ANN001, ANN201
    with services.repo.transaction(write=True) as tx:
        return services.jobs.enqueue(tx, kind, payload or {}, as_=kw.pop("as_", SystemJob("test")), **kw)


def test_enqueue_is_part_of_the_callers_transaction(services):  # noqa: ANN001
    pk = _enqueue(services, "test.noop")
    assert services.jobs.state(pk)["state"] == QUEUED
    with pytest.raises(RuntimeError):
        with services.repo.transaction(write=True) as tx:
            rolled = services.jobs.enqueue(tx, "test.noop", {}, as_=SystemJob("test"))
            raise RuntimeError("the write fails")
    assert services.jobs.state(rolled) is None  # no job for a write that never happened


def test_a_job_runs_as_a_system_job_or_a_principal_nothing_else(services):  # noqa: ANN001
    with pytest.raises(TypeError):
        _enqueue(services, "test.noop", as_=DenyPolicy())
    seen = {}
    reg = Registry(policy_for=lambda p: SmartPolicy(p))
    reg.register("test.who", lambda ctx: seen.setdefault(ctx.job.pk, (ctx.access, ctx.principal)))
    jobs = Jobs(services.repo.engine, reg)
    p = Principal(client_id="ehr", role="system", scopes=tuple(parse_scopes(["system/Patient.rs"])),
                  scope_text="system/Patient.rs", organizations=("org1",))
    with services.repo.transaction(write=True) as tx:
        as_system = jobs.enqueue(tx, "test.who", {}, as_=SystemJob("cleanup"))
        as_client = jobs.enqueue(tx, "test.who", {}, as_=p)
    jobs.worker(services, threads=1).run_pending()
    assert isinstance(seen[as_system][0], SystemJob) and seen[as_system][0].name == "cleanup"
    policy, principal = seen[as_client]
    assert isinstance(policy, SmartPolicy) and principal.organizations == ("org1",)
    assert principal.scopes == p.scopes and principal.client_id == "ehr"
    # a registry that cannot rebuild a requester's policy runs its job with no access at all
    bare = Registry()
    assert isinstance(bare.access_for({"principal": {"client_id": "x", "role": "system"}}), DenyPolicy)
    assert isinstance(bare.access_for({}), DenyPolicy)


@pytest.mark.parametrize("workers,threads", [(3, 3)])
def test_concurrent_workers_run_each_job_exactly_once(services, workers, threads):  # noqa: ANN001
    runs: Counter = Counter()
    lock = threading.Lock()

    def handler(ctx) -> None:  # noqa: ANN001
        with lock:
            runs[ctx.payload["n"]] += 1

    reg = Registry()
    reg.register("test.count", handler)
    jobs = Jobs(services.repo.engine, reg)
    total = 150
    with services.repo.transaction(write=True) as tx:
        for n in range(total):
            jobs.enqueue(tx, "test.count", {"n": n}, as_=SystemJob("test"))
    pool = [jobs.worker(services, threads=threads, poll_seconds=0.02).start() for _ in range(workers)]
    try:
        wait_for(lambda: sum(runs.values()) >= total and not jobs.depth())
    finally:
        jobs.stop()
    assert len(runs) == total and set(runs.values()) == {1}
    from sqlalchemy import func, select

    from fhirserver.jobs import job
    with services.repo.engine.connect() as c:
        states = dict(c.execute(select(job.c.state, func.count()).group_by(job.c.state)).all())
    assert states == {DONE: total}
    assert pool and all(not t.is_alive() for w in pool for t in w._threads)


def test_a_killed_workers_job_runs_again_when_its_lease_expires(services, database_url, tmp_path):  # noqa: ANN001
    pk = _enqueue(services, "test.sleep")
    marker = tmp_path / "claimed"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_sleeper.py")), database_url, str(marker)],
                            env=env)
    try:
        wait_for(marker.exists)
        assert services.jobs.state(pk)["state"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ran = []
    reg = Registry()
    reg.register("test.sleep", lambda ctx: ran.append(ctx.job.attempts), lease_seconds=1.0)
    w = Worker(services, reg, threads=1)
    # nobody else may take it while the dead worker's lease still runs; then it runs again
    wait_for(lambda: w.run_one(), timeout=60)
    assert ran == [2]
    assert services.jobs.state(pk)["state"] == DONE


def test_a_failing_job_is_retried_with_backoff_then_succeeds(services):  # noqa: ANN001
    calls = []

    def flaky(ctx) -> None:  # noqa: ANN001
        calls.append(time.time())
        if len(calls) < 3:
            raise OSError("peer down")

    reg = Registry()
    reg.register("test.flaky", flaky, max_attempts=5, backoff_seconds=0.2)
    jobs = Jobs(services.repo.engine, reg)
    with services.repo.transaction(write=True) as tx:
        pk = jobs.enqueue(tx, "test.flaky", {}, as_=SystemJob("test"))
    w = jobs.worker(services, threads=1)
    assert w.run_one()
    st = jobs.state(pk)
    assert st["state"] == QUEUED and st["attempts"] == 1 and "peer down" in st["error"]
    assert st["run_at"] >= queue.now_ms() + 50  # not due again at once
    assert not w.run_one()  # backing off
    wait_for(w.run_one)
    st2 = jobs.state(pk)
    assert st2["attempts"] == 2 and st2["run_at"] - st["run_at"] >= 300  # the second wait is longer
    wait_for(w.run_one)
    assert jobs.state(pk)["state"] == DONE and len(calls) == 3
    assert calls[1] - calls[0] >= 0.2 and calls[2] - calls[1] >= 0.4


def test_a_job_failing_every_attempt_ends_failed(services):  # noqa: ANN001
    reg = Registry()
    reg.register("test.broken", lambda ctx: 1 / 0, max_attempts=3, backoff_seconds=0.01)
    jobs = Jobs(services.repo.engine, reg)
    with services.repo.transaction(write=True) as tx:
        pk = jobs.enqueue(tx, "test.broken", {}, as_=SystemJob("test"))
    w = jobs.worker(services, threads=1)
    wait_for(lambda: jobs.state(pk)["state"] == FAILED or (w.run_one() and False))
    st = jobs.state(pk)
    assert st["attempts"] == 3 and "ZeroDivisionError" in st["error"]
    assert not w.run_one()


def test_run_at_schedules_and_dedupe_folds_waiting_causes(services):  # noqa: ANN001
    ran = []
    reg = Registry()
    reg.register("test.later", lambda ctx: ran.append(ctx.job.pk))
    jobs = Jobs(services.repo.engine, reg)
    with services.repo.transaction(write=True) as tx:
        later = jobs.enqueue(tx, "test.later", {}, as_=SystemJob("test"), run_at_ms=queue.now_ms() + 600_000)
        first = jobs.enqueue(tx, "test.later", {}, as_=SystemJob("test"), dedupe_key="study:1")
        again = jobs.enqueue(tx, "test.later", {}, as_=SystemJob("test"), dedupe_key="study:1")
    assert first and again is None
    w = jobs.worker(services, threads=1)
    assert w.run_pending() == 1 and ran == [first]  # the scheduled one is not due
    assert jobs.state(later)["state"] == QUEUED
    with services.repo.transaction(write=True) as tx:  # the key is free once its job ran
        assert jobs.enqueue(tx, "test.later", {}, as_=SystemJob("test"), dedupe_key="study:1")


def test_cancel_a_waiting_and_a_running_job(services):  # noqa: ANN001
    started, release = threading.Event(), threading.Event()

    def long(ctx) -> None:  # noqa: ANN001
        started.set()
        while not ctx.cancelled():
            time.sleep(0.02)
        ctx.check()

    reg = Registry()
    reg.register("test.long", long, lease_seconds=0.3)
    jobs = Jobs(services.repo.engine, reg)
    with services.repo.transaction(write=True) as tx:
        waiting = jobs.enqueue(tx, "test.long", {}, as_=SystemJob("test"), run_at_ms=queue.now_ms() + 600_000)
        running = jobs.enqueue(tx, "test.long", {}, as_=SystemJob("test"))
    with services.repo.transaction(write=True) as tx:
        jobs.cancel(tx, waiting)
    assert jobs.state(waiting)["state"] == CANCELLED
    jobs.worker(services, threads=1, poll_seconds=0.02).start()
    try:
        wait_for(started.is_set)
        with services.repo.transaction(write=True) as tx:
            jobs.cancel(tx, running)
        wait_for(lambda: jobs.state(running)["state"] == CANCELLED)
    finally:
        release.set()
        jobs.stop()


def test_queue_depth_on_metrics_and_readyz(services, client):  # noqa: ANN001
    _enqueue(services, "email.send", {"outbox": 0})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'fhirserver_queue_depth{queue="email.send"} 1.0' in text
    assert client.get("/readyz").json["queue"] == {"email.send": 1}
    services.jobs.worker(services, threads=1).run_pending()  # outbox row 0 does not exist: done
    assert client.get("/readyz").json["queue"] == {}


def test_worker_command_runs_due_jobs_once(services, settings, tmp_path):  # noqa: ANN001
    pk = _enqueue(services, "email.send", {"outbox": 0})
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=settings.database_url, FHIRSERVER_DATA_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "fhirserver.cli", "worker", "--once"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert services.jobs.state(pk)["state"] == DONE


def test_postgres_workers_wake_on_notify_not_the_poll(services, is_postgres):  # noqa: ANN001
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    ran = threading.Event()
    reg = Registry()
    reg.register("test.wake", lambda ctx: ran.set())
    jobs = Jobs(services.repo.engine, reg)
    w = jobs.worker(services, threads=1, poll_seconds=300).start()  # the poll alone would take minutes
    try:
        assert w.listening.wait(30)
        other = Jobs(services.repo.engine, Registry())  # another process's queue: no local wake
        with services.repo.transaction(write=True) as tx:
            other.enqueue(tx, "test.wake", {}, as_=SystemJob("test"))
        assert ran.wait(30)
    finally:
        jobs.stop()
