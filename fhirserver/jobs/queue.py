"""The queue's SQL: enqueue in the caller's transaction, claim with a lease, finish, retry, cancel.

Claiming is one short transaction: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (concurrent
workers pass over each other's rows instead of waiting), `BEGIN IMMEDIATE` on SQLite (one writer
at a time anyway). A claim sets a lease; a worker renews it while the handler runs, so the lease
of a killed worker runs out and another worker takes the job again. Every update after the
claim names the lease holder and its attempt, so a worker that lost its lease cannot overwrite
the outcome of the one that took over.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
import uuid
from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fhirserver.jobs.tables import job
from fhirserver.storage import reading

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
CHANNEL = "fhirserver_jobs"  # PostgreSQL LISTEN/NOTIFY channel of new jobs


def now_ms() -> int:
    return int(time.time() * 1000)


def worker_name() -> str:
    """Unique per worker object: host, process and a random part (threads share a worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class Job:
    """A claimed job, as its handler sees it."""

    pk: int
    kind: str
    payload: dict[str, Any]
    actor: dict[str, Any]
    attempts: int
    max_attempts: int
    worker: str
    dedupe_key: str | None


def _connection(where: Any) -> Connection:
    """A storage `Tx` or a SQLAlchemy Connection: the caller's open transaction."""
    return getattr(where, "conn", where)


@functools.lru_cache(maxsize=4)
def _insert_stmt(dialect: str) -> Any:
    """The deduplicating INSERT of a dialect, built once (a memo of an immutable statement per
    dialect name, not state: no engine or connection is kept)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    from sqlalchemy import text

    return dialect_insert(job).on_conflict_do_nothing(
        index_elements=["dedupe_key"], index_where=text("state = 'queued'")).returning(job.c.pk)


def insert_job(where: Any, kind: str, payload: dict[str, Any], actor: dict[str, Any], *,
               run_at_ms: int | None = None, dedupe_key: str | None = None, max_attempts: int = 5) -> int | None:
    """Record a job in the caller's transaction (so it exists exactly when the write causing it
    commits). With `dedupe_key`, a job already waiting under that key stands for this one: None."""
    conn = _connection(where)
    t = now_ms()
    values = {"kind": kind, "payload": orjson.dumps(payload).decode(), "actor": orjson.dumps(actor).decode(),
              "state": QUEUED, "attempts": 0, "max_attempts": max(1, max_attempts),
              "run_at": t if run_at_ms is None else run_at_ms, "dedupe_key": dedupe_key,
              "cancel_requested": False, "created": t}
    if conn.dialect.name == "postgresql":  # delivered at commit: idle workers elsewhere look at once
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
    if dedupe_key is None:
        return conn.execute(insert(job).values(**values).returning(job.c.pk)).scalar_one()
    return conn.execute(_insert_stmt(conn.dialect.name).values(**values)).scalar()


def _claimable(kinds: Sequence[str], t: int) -> Any:
    due = or_(and_(job.c.state == QUEUED, job.c.run_at <= t),
              and_(job.c.state == RUNNING, job.c.lease_until < t))
    return select(job.c.pk).where(due, job.c.kind.in_(list(kinds))).order_by(job.c.run_at, job.c.pk).limit(1)


_JOB_COLS = (job.c.pk, job.c.kind, job.c.payload, job.c.actor, job.c.attempts, job.c.max_attempts,
             job.c.dedupe_key, job.c.state, job.c.worker)


def claim(engine: Engine, kinds: Sequence[str], worker: str, lease_seconds: float) -> Job | None:
    """Take the next due job of these kinds (or one whose lease ran out) and lease it; None when
    nothing is due. A job whose lease ran out after its last attempt is marked failed here."""
    if not kinds:
        return None
    postgres = engine.dialect.name == "postgresql"
    while True:
        t = now_ms()
        with reading(engine) as probe:  # idle polls take no lock (on SQLite, no write lock)
            if probe.execute(_claimable(kinds, t)).scalar() is None:
                return None
        with engine.connect() as conn:
            if not postgres:
                conn = conn.execution_options(fhir_write=True)  # BEGIN IMMEDIATE
            with conn.begin():
                q = _claimable(kinds, t)
                if postgres:
                    q = q.with_for_update(skip_locked=True)
                pk = conn.execute(q).scalar()
                if pk is None:
                    return None
                row = conn.execute(select(*_JOB_COLS).where(job.c.pk == pk)).one()
                if row.state == RUNNING and row.attempts >= row.max_attempts:
                    conn.execute(update(job).where(job.c.pk == pk).values(
                        state=FAILED, finished=t, lease_until=None,
                        error=f"the worker {row.worker} stopped during the last attempt"))
                    continue
                if row.state == RUNNING:
                    values: dict[str, Any] = {}
                else:
                    values = {"dedupe_key": None}  # the key is free for the next cause once it runs
                conn.execute(update(job).where(job.c.pk == pk).values(
                    state=RUNNING, worker=worker, attempts=row.attempts + 1,
                    lease_until=t + int(lease_seconds * 1000), **values))
        return Job(row.pk, row.kind, orjson.loads(row.payload), orjson.loads(row.actor), row.attempts + 1,
                   row.max_attempts, worker, row.dedupe_key)


def _held(j: Job) -> Any:
    return and_(job.c.pk == j.pk, job.c.worker == j.worker, job.c.attempts == j.attempts,
                job.c.state == RUNNING)


def renew(engine: Engine, held: Iterable[Job], lease_seconds: float) -> set[int]:
    """Extend the leases of these running jobs; returns the pks whose cancellation was asked."""
    held = list(held)
    if not held:
        return set()
    until = now_ms() + int(lease_seconds * 1000)
    with engine.begin() as conn:
        for j in held:
            conn.execute(update(job).where(_held(j)).values(lease_until=until))
        rows = conn.execute(select(job.c.pk).where(job.c.pk.in_([j.pk for j in held]),
                                                   job.c.cancel_requested.is_(True))).scalars()
        return set(rows)


def _finish(engine: Engine, j: Job, values: dict[str, Any]) -> bool:
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            conn = conn.execution_options(fhir_write=True)
        with conn.begin():
            return conn.execute(update(job).where(_held(j)).values(**values)).rowcount == 1


def complete(engine: Engine, j: Job) -> bool:
    return _finish(engine, j, {"state": DONE, "finished": now_ms(), "lease_until": None, "error": None})


def cancelled(engine: Engine, j: Job) -> bool:
    return _finish(engine, j, {"state": CANCELLED, "finished": now_ms(), "lease_until": None})


def backoff_ms(attempts: int, base_seconds: float, cap_seconds: float = 3600.0) -> int:
    """Exponential: base, 2*base, 4*base ... capped (attempts counts the failed one)."""
    return int(min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)) * 1000)


def fail(engine: Engine, j: Job, error: str, base_seconds: float, *, permanent: bool = False) -> str:
    """A failed attempt: queued again after the backoff, or `failed` after the last attempt."""
    t = now_ms()
    if permanent or j.attempts >= j.max_attempts:
        _finish(engine, j, {"state": FAILED, "finished": t, "lease_until": None, "error": error[:2000]})
        return FAILED
    values = {"state": QUEUED, "run_at": t + backoff_ms(j.attempts, base_seconds), "lease_until": None,
              "worker": None, "error": error[:2000], "dedupe_key": j.dedupe_key}
    try:
        _finish(engine, j, values)
    except IntegrityError:  # a newer job waits under the same key: it does this work
        _finish(engine, j, {"state": DONE, "finished": t, "lease_until": None,
                            "error": f"superseded after: {error[:1900]}"})
        return DONE
    return QUEUED


def request_cancel(where: Any, pk: int) -> None:
    """Cancel a job: a waiting one at once, a running one when its handler next checks."""
    conn = _connection(where)
    conn.execute(update(job).where(job.c.pk == pk, job.c.state == QUEUED)
                 .values(state=CANCELLED, finished=now_ms(), dedupe_key=None))
    conn.execute(update(job).where(job.c.pk == pk, job.c.state == RUNNING).values(cancel_requested=True))


def state_of(engine: Engine, pk: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(job).where(job.c.pk == pk)).mappings().first()
        return dict(row) if row else None


def depth(engine: Engine) -> dict[str, int]:
    """Jobs waiting or running, by kind (for /metrics and /readyz)."""
    with engine.connect() as conn:
        rows = conn.execute(select(job.c.kind, func.count()).where(job.c.state.in_([QUEUED, RUNNING]))
                            .group_by(job.c.kind)).all()
    return {kind: n for kind, n in rows}


def failed_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(job).where(job.c.state == FAILED)).scalar_one()
