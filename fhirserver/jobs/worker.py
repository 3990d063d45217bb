"""Job kinds, the access each job runs with, and the Worker that runs them in threads.

The app factory registers the handlers (never an import); `fhirserver serve` starts a Worker in
each HTTP worker process, `fhirserver worker` runs one alone (other machines, same database).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable

from sqlalchemy.engine import Engine

from fhirserver.access import DenyPolicy, Principal, SystemJob, parse_scopes
from fhirserver.jobs import queue
from fhirserver.jobs.queue import Job

log = logging.getLogger("fhirserver.jobs")


class Cancelled(Exception):
    """Raised by `JobContext.check` when someone cancelled the running job."""


class Permanent(Exception):
    """A handler's failure that no retry can cure (bad payload, the thing it works on is gone)."""


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    handler: Callable[["JobContext"], None]
    max_attempts: int = 5
    backoff_seconds: float = 2.0      # first retry after this, doubling
    lease_seconds: float = 60.0       # renewed every third of it while the handler runs


def actor_of(access: SystemJob | Principal) -> dict[str, Any]:
    """What a job row records about who it runs as: a named system job or the requester."""
    if isinstance(access, SystemJob):
        return {"system": access.name}
    if isinstance(access, Principal):
        p = dataclasses.asdict(access)
        p.pop("scopes")  # rebuilt from scope_text
        p.pop("shared_imaging")  # Consent shares are read again when the job runs
        p.pop("shared_windows")
        return {"principal": p}
    raise TypeError("a job runs as a SystemJob(name) or a requester's Principal, nothing else")


def principal_from_actor(actor: dict[str, Any]) -> Principal | None:
    p = actor.get("principal")
    if not isinstance(p, dict):
        return None
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in p.items()}
    return Principal(scopes=tuple(parse_scopes((fields.get("scope_text") or "").split())), **fields)


class Registry:
    """The job kinds this process runs, and how a requester's Principal becomes a policy."""

    def __init__(self, policy_for: Callable[[Principal], Any] | None = None) -> None:
        self.kinds: dict[str, Kind] = {}
        self.policy_for = policy_for

    def register(self, name: str, handler: Callable[["JobContext"], None], **options: Any) -> None:
        self.kinds[name] = Kind(name, handler, **options)

    def access_for(self, actor: dict[str, Any]) -> Any:
        """The policy a job runs with; fails closed (DenyPolicy) when it cannot be rebuilt."""
        if isinstance(actor.get("system"), str):
            return SystemJob(actor["system"])
        principal = principal_from_actor(actor)
        if principal is not None and self.policy_for is not None:
            return self.policy_for(principal)
        return DenyPolicy()


@dataclasses.dataclass
class JobContext:
    """What a handler gets: its job, the services, its access policy, and cancellation checks."""

    job: Job
    services: Any
    access: Any
    principal: Principal | None
    _cancel: threading.Event

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise Cancelled if the job was cancelled (call between chunks of work)."""
        if self._cancel.is_set():
            raise Cancelled()


class Worker:
    """Runs due jobs in `threads` threads until stopped; a lease keeper renews running leases."""

    def __init__(self, services: Any, registry: Registry, *, threads: int = 2, poll_seconds: float = 0.5) -> None:
        self.services = services
        self.registry = registry
        self.threads = max(1, threads)
        self.poll_seconds = poll_seconds
        self.name = queue.worker_name()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by `wake`; a wake during a run is not lost
        self._running: dict[int, tuple[Job, threading.Event]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()  # PostgreSQL: the NOTIFY listener is connected

    @property
    def engine(self) -> Engine:
        return self.services.repo.engine

    def start(self) -> "Worker":
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"fhirserver-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        keeper = threading.Thread(target=self._keep_leases, name="fhirserver-job-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        if self.engine.dialect.name == "postgresql":
            listener = threading.Thread(target=self._listen, name="fhirserver-job-listen", daemon=True)
            listener.start()
            self._threads.append(listener)
        return self

    def _listen(self) -> None:
        """PostgreSQL: wake on NOTIFY from any process's enqueue instead of waiting for the poll.
        Polling stays the fallback (a lost connection only costs latency)."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {queue.CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except Exception:  # noqa: BLE001 - database restarting: poll meanwhile, reconnect later
                self.listening.clear()
                log.debug("job worker %s: LISTEN connection lost", self.name, exc_info=True)
                self._stop.wait(5.0)

    def request_stop(self) -> None:
        """Ask the threads to end without waiting (so several workers end at the same time)."""
        self._stop.set()
        self.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def wake(self) -> None:
        """A job was just enqueued in this process: look now instead of at the next poll."""
        self._wake.set()

    def run_one(self) -> bool:
        """Claim and run one due job; False when none was due."""
        kinds = list(self.registry.kinds)
        lease = max((k.lease_seconds for k in self.registry.kinds.values()), default=60.0)
        j = queue.claim(self.engine, kinds, self.name, lease)
        if j is None:
            return False
        self._run(j)
        return True

    def run_pending(self, limit: int = 10_000) -> int:
        """Run due jobs until none is left (tests, `fhirserver worker --once`)."""
        n = 0
        while n < limit and self.run_one():
            n += 1
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_one():
                    continue
            except Exception:  # noqa: BLE001 - a database hiccup: wait and try again
                log.exception("job worker %s: claiming failed", self.name)
            if self._wake.wait(self.poll_seconds):
                self._wake.clear()

    def _keep_leases(self) -> None:
        while not self._stop.wait(self._renew_every()):
            with self._lock:
                held = {pk: job for pk, (job, _) in self._running.items()}
            if not held:
                continue
            try:
                lease = max(k.lease_seconds for k in self.registry.kinds.values())
                for pk in queue.renew(self.engine, held.values(), lease):
                    with self._lock:
                        if pk in self._running:
                            self._running[pk][1].set()
            except Exception:  # noqa: BLE001 - the lease may lapse; the job then runs again elsewhere
                log.exception("job worker %s: renewing leases failed", self.name)

    def _renew_every(self) -> float:
        lease = min((k.lease_seconds for k in self.registry.kinds.values()), default=60.0)
        return max(0.05, lease / 3)

    def _run(self, j: Job) -> None:
        kind = self.registry.kinds[j.kind]
        cancel = threading.Event()
        with self._lock:
            self._running[j.pk] = (j, cancel)
        try:
            ctx = JobContext(j, self.services, self.registry.access_for(j.actor), principal_from_actor(j.actor), cancel)
            kind.handler(ctx)
        except Cancelled:
            queue.cancelled(self.engine, j)
            return
        except Permanent as exc:
            queue.fail(self.engine, j, f"{type(exc).__name__}: {exc}", kind.backoff_seconds, permanent=True)
            return
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then `failed`
            state = queue.fail(self.engine, j, f"{type(exc).__name__}: {exc}", kind.backoff_seconds)
            log.warning("job %s %s attempt %s failed (%s): %s", j.kind, j.pk, j.attempts, state, exc)
            return
        finally:
            with self._lock:
                self._running.pop(j.pk, None)
        queue.complete(self.engine, j)
