"""A durable job queue on the server's own database (SQLite or PostgreSQL), no broker.

Why hand-written: the libraries that queue on a SQL database are PostgreSQL-only (procrastinate,
pgqueuer) and the Redis ones (RQ, Celery) need a second service, while `make run` must keep
working on the embedded SQLite file alone. The queue is one table and a few statements:

- `Jobs.enqueue(tx, kind, payload, as_=...)` records a job in the caller's transaction (an
  outbox: it exists exactly when the write causing it commits, never for a rolled-back one);
- a `dedupe_key` folds causes arriving while a job waits into that job; `run_at` schedules;
- workers lease jobs (a killed worker's lease runs out and the job runs again), retry failures
  with exponential backoff up to `max_attempts`, then mark them `failed`;
- every job runs as a named `SystemJob` or as the requester's own Principal (rebuilt into the
  requester's policy when it runs), never as the open policy by default.
"""
from __future__ import annotations

from typing import Any

from fhirserver.access import Principal, SystemJob
from fhirserver.jobs import queue
from fhirserver.jobs.queue import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, insert_job, now_ms
from fhirserver.jobs.tables import JOB_TABLES, job
from fhirserver.jobs.worker import (
    Cancelled, JobContext, Kind, Permanent, Registry, Worker, actor_of, principal_from_actor,
)


class Jobs:
    """The queue of one process: its registry of kinds and the workers it started."""

    def __init__(self, engine: Any, registry: Registry | None = None) -> None:
        self.engine = engine
        self.registry = registry or Registry()
        self._workers: list[Worker] = []

    def register(self, name: str, handler: Any, **options: Any) -> None:
        """Add a job kind (app factory only): see `Kind` for the options."""
        self.registry.register(name, handler, **options)

    def enqueue(self, where: Any, kind: str, payload: dict[str, Any], *, as_: SystemJob | Principal,
                run_at_ms: int | None = None, dedupe_key: str | None = None,
                max_attempts: int | None = None) -> int | None:
        """Record a job in the open transaction `where` (a storage Tx or a Connection); returns
        its id, or None when a waiting job with the same `dedupe_key` already covers it."""
        known = self.registry.kinds.get(kind)
        attempts = max_attempts or (known.max_attempts if known else 5)
        pk = queue.insert_job(where, kind, payload, actor_of(as_), run_at_ms=run_at_ms,
                              dedupe_key=dedupe_key, max_attempts=attempts)
        hooks = getattr(where, "on_commit", None)
        if isinstance(hooks, list):
            hooks.append(self.wake)
        return pk

    def cancel(self, where: Any, pk: int) -> None:
        queue.request_cancel(where, pk)

    def state(self, pk: int) -> dict[str, Any] | None:
        return queue.state_of(self.engine, pk)

    def depth(self) -> dict[str, int]:
        """Waiting or running jobs by kind."""
        return queue.depth(self.engine)

    def worker(self, services: Any, *, threads: int = 2, poll_seconds: float = 0.5) -> Worker:
        """A Worker on this registry (not started); `wake` reaches it after local enqueues."""
        w = Worker(services, self.registry, threads=threads, poll_seconds=poll_seconds)
        self._workers.append(w)
        return w

    def wake(self) -> None:
        for w in list(self._workers):
            w.wake()

    def stop(self) -> None:
        for w in self._workers:  # all asked first: the LISTEN threads notice within a second, together
            w.request_stop()
        for w in self._workers:
            w.stop()
        self._workers.clear()


__all__ = ["CANCELLED", "DONE", "FAILED", "JOB_TABLES", "QUEUED", "RUNNING", "Cancelled", "Job",
           "JobContext", "Jobs", "Kind", "Permanent", "Registry", "Worker", "actor_of", "job",
           "principal_from_actor", "queue"]
__all__ += ["insert_job", "now_ms"]  # a job queued inside the caller's own transaction
