"""The delivery worker: turns outbox events into numbered notifications and sends them.

Three steps, each in its own short transaction, so any number of workers (in `serve` and on
other machines) share the work through the database:

1. dispatch: each new event is matched against the live subscriptions of its topic (filters,
   then the owner's own read access through the gate); a match takes the subscription's next
   event number and becomes a pending delivery. Events are taken in order under a row lock, so
   event numbers follow the order of the writes.
2. heartbeats: an active subscription with a heartbeat period that sent nothing for that long
   gets a heartbeat delivery.
3. delivery: per subscription, the oldest pending delivery is leased (a worker killed mid-POST
   loses the lease after `subscription_lease_seconds` and another one sends it), POSTed to the
   endpoint, and marked sent; a failure is retried with exponential backoff, and after
   `subscription_attempts` POSTs the subscription goes to `error`. A handshake that succeeds
   makes a requested subscription active.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import requests
from sqlalchemy import and_, func, insert, or_, select, update

from fhirserver.access import SystemJob
from fhirserver.model.jsonio import dumps, loads
from fhirserver.storage import Repository, VersionConflict
from fhirserver.subscriptions.notification import Event, bundle, status_parameters
from fhirserver.subscriptions.outbox import LIVE, ms
from fhirserver.subscriptions.owner import JOB, may_read, owner_policy
from fhirserver.subscriptions.spec import Spec
from fhirserver.subscriptions.tables import subscription_delivery, subscription_event, subscription_state
from fhirserver.subscriptions.topics import BY_URL, matches

log = logging.getLogger("fhirserver.subscriptions")
S, E, D = subscription_state, subscription_event, subscription_delivery


def dispatch_events(repo: Repository, settings: Any, limit: int = 200) -> int:
    """Number the new events for the subscriptions they concern; returns how many were taken."""
    with repo.engine.connect() as c:  # a read first: the write lock only when there is work
        if c.execute(select(E.c.pk).where(E.c.dispatched.is_(False)).limit(1)).first() is None:
            return 0
    with repo.transaction(write=True) as tx:
        q = select(E).where(E.c.dispatched.is_(False)).order_by(E.c.pk).limit(limit)
        if tx.postgres:
            q = q.with_for_update()
        rows = tx.conn.execute(q).all()
        policies: dict[str, Any] = {}
        for ev in rows:
            subs = tx.conn.execute(select(S).where(S.c.topic == ev.topic, S.c.status.in_(LIVE),
                                                   S.c.created <= ev.created).order_by(S.c.sub_id)).all()
            version = tx.version(ev.res_type, ev.res_id, ev.version_id) if subs else None
            body = loads(version.body) if version is not None and version.body else None
            for sub in subs:
                spec = Spec.from_json(json.loads(sub.spec))
                topic = BY_URL.get(spec.topic)
                if body is None or topic is None or spec.off:
                    continue
                if not matches(topic, [(n, list(v)) for n, v in spec.filters], body, settings.fhir_base):
                    continue
                if sub.sub_id not in policies:
                    policies[sub.sub_id] = owner_policy(sub.owner, repo.engine, settings)
                if not may_read(policies[sub.sub_id], tx, ev.res_type, ev.res_id):
                    continue  # nobody is told of data they could not read
                number = tx.conn.execute(update(S).where(S.c.sub_id == sub.sub_id)
                                         .values(event_count=S.c.event_count + 1)
                                         .returning(S.c.event_count)).scalar_one()
                tx.conn.execute(insert(D).values(
                    sub_id=sub.sub_id, kind="event-notification", event_number=number,
                    res_type=ev.res_type, res_id=ev.res_id, version_id=ev.version_id,
                    event_time=ev.created, state="pending", attempts=0, next_attempt=ev.created))
            tx.conn.execute(update(E).where(E.c.pk == ev.pk).values(dispatched=True))
        return len(rows)


def _heartbeat_due(sub: Any, now: int) -> bool:
    period = Spec.from_json(json.loads(sub.spec)).heartbeat
    return bool(period) and (sub.last_sent or sub.created) + period * 1000 <= now


def schedule_heartbeats(repo: Repository) -> int:
    """A heartbeat delivery for each active subscription that sent nothing for its period."""
    now = ms()
    n = 0
    with repo.engine.connect() as c:
        if not any(_heartbeat_due(sub, now) for sub in c.execute(select(S).where(S.c.status == "active"))):
            return 0
    with repo.transaction(write=True) as tx:
        for sub in tx.conn.execute(select(S).where(S.c.status == "active")).all():
            if not _heartbeat_due(sub, now):
                continue
            busy = tx.conn.execute(select(D.c.pk).where(D.c.sub_id == sub.sub_id, D.c.state == "pending")
                                   .limit(1)).first()
            if busy is None:
                tx.conn.execute(insert(D).values(sub_id=sub.sub_id, kind="heartbeat", event_time=now,
                                                 state="pending", attempts=0, next_attempt=now))
                tx.conn.execute(update(S).where(S.c.sub_id == sub.sub_id).values(last_sent=now))
                n += 1
    return n


def _claim(repo: Repository, settings: Any, limit: int) -> list[tuple[Any, Any, int]]:
    """Lease the oldest pending delivery of each subscription that is due now."""
    now = ms()
    lease = now + settings.subscription_lease_seconds * 1000
    with repo.engine.connect() as c:
        # the oldest pending delivery per subscription: later ones wait for it (order of events)
        first = select(D.c.sub_id, func.min(D.c.pk).label("pk")).where(D.c.state == "pending") \
            .group_by(D.c.sub_id).subquery()
        rows = c.execute(select(D, S.c.status.label("sub_status")).join(first, first.c.pk == D.c.pk)
                         .join(S, S.c.sub_id == D.c.sub_id)
                         .where(D.c.next_attempt <= now, or_(D.c.lease_until.is_(None), D.c.lease_until < now))
                         .order_by(D.c.pk).limit(limit)).all()
    claimed = []
    for row in rows:
        if not (row.sub_status == "active" or (row.sub_status == "requested" and row.kind == "handshake")):
            continue
        with repo.engine.begin() as c:
            got = c.execute(update(D).where(
                D.c.pk == row.pk, D.c.state == "pending",
                or_(D.c.lease_until.is_(None), D.c.lease_until < now))
                .values(lease_until=lease, attempts=D.c.attempts + 1)).rowcount
        if got == 1:
            claimed.append((row, lease, row.attempts + 1))
    return claimed


def _notification(repo: Repository, settings: Any, row: Any) -> tuple[Spec, dict[str, Any]] | None:
    with repo.transaction() as tx:
        sub = tx.conn.execute(select(S).where(S.c.sub_id == row.sub_id)).first()
        if sub is None:
            return None
        spec = Spec.from_json(json.loads(sub.spec))
        events: list[Event] = []
        if row.kind == "event-notification":
            body = None
            if spec.content == "full-resource":  # the resource goes out only if still readable
                policy = owner_policy(sub.owner, repo.engine, settings)
                if may_read(policy, tx, row.res_type, row.res_id):
                    version = tx.version(row.res_type, row.res_id, row.version_id)
                    body = version.body if version is not None else None
            events.append(Event(row.event_number, row.event_time, row.res_type, row.res_id, row.version_id,
                                body, row.version_id == 1))
        status = "requested" if row.kind == "handshake" else sub.status
        since = row.event_number if row.kind == "event-notification" else sub.event_count
        params = status_parameters(settings.fhir_base, sub.sub_id, spec.topic, status, row.kind, since,
                                   events, spec.content)
        return spec, bundle(settings.fhir_base, params, sub.sub_id, events, spec.content)


def _post(session: requests.Session, spec: Spec, payload: dict[str, Any]) -> str | None:
    """None when the endpoint took it (2xx), else why not."""
    headers = {"Content-Type": "application/fhir+json"}
    headers.update(dict(spec.headers))
    try:
        resp = session.post(spec.endpoint, data=dumps(payload), headers=headers, timeout=spec.timeout,
                            allow_redirects=False)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= resp.status_code < 300:
        return None
    return f"the endpoint answered HTTP {resp.status_code}"


def set_resource_status(repo: Repository, sub_id: str, status: str, error: str | None = None) -> None:
    """Record the server's status in the Subscription resource (a new version, as the named job)."""
    for _ in range(3):
        with repo.transaction(write=True) as tx:
            tx.actor = SystemJob(JOB)
            cur = tx.current("Subscription", sub_id)
            if cur is None or cur.deleted or cur.body is None:
                return
            body = loads(cur.body)
            if body.get("status") == status and body.get("error") == error:
                return
            body["status"] = status
            if error:
                body["error"] = error
            else:
                body.pop("error", None)
            try:
                tx.update("Subscription", sub_id, body, if_match=cur.version_id, method="PUT")
                return
            except VersionConflict:
                continue


def _finish(repo: Repository, settings: Any, row: Any, lease: int, attempts: int, problem: str | None) -> None:
    now = ms()
    mine = and_(D.c.pk == row.pk, D.c.lease_until == lease, D.c.state == "pending")
    became: tuple[str, str | None] | None = None
    with repo.engine.begin() as c:
        if problem is None:
            if c.execute(update(D).where(mine).values(state="sent", sent_at=now, lease_until=None,
                                                      last_error=None)).rowcount != 1:
                return
            c.execute(update(S).where(S.c.sub_id == row.sub_id).values(last_sent=now))
            if row.kind == "handshake":
                if c.execute(update(S).where(S.c.sub_id == row.sub_id, S.c.status == "requested")
                             .values(status="active", error=None)).rowcount:
                    became = ("active", None)
        elif attempts >= settings.subscription_attempts:
            if c.execute(update(D).where(mine).values(state="failed", lease_until=None,
                                                      last_error=problem)).rowcount != 1:
                return
            msg = f"Delivery failed {attempts} times: {problem}"
            if c.execute(update(S).where(S.c.sub_id == row.sub_id, S.c.status.in_(LIVE))
                         .values(status="error", error=msg)).rowcount:
                became = ("error", msg)
        else:
            wait = settings.subscription_backoff_seconds * 2 ** (attempts - 1)
            c.execute(update(D).where(mine).values(lease_until=None, last_error=problem,
                                                   next_attempt=now + int(wait * 1000)))
    if became:
        set_resource_status(repo, row.sub_id, *became)


def deliver_due(repo: Repository, settings: Any, session: requests.Session, limit: int = 20) -> int:
    n = 0
    for row, lease, attempts in _claim(repo, settings, limit):
        built = _notification(repo, settings, row)
        if built is None:
            continue
        spec, payload = built
        problem = _post(session, spec, payload)
        if problem:
            log.warning("subscription %s: %s (attempt %s)", row.sub_id, problem, attempts)
        _finish(repo, settings, row, lease, attempts, problem)
        n += 1
    return n


class Worker:
    """The loop: dispatch, heartbeats, deliveries, then wait for a wake-up or the poll interval."""

    def __init__(self, repo: Repository, settings: Any) -> None:
        self.repo, self.settings = repo, settings
        self.session = requests.Session()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()

    def wake(self) -> None:
        self.wakeup.set()

    def run_once(self) -> int:
        work = dispatch_events(self.repo, self.settings)
        work += schedule_heartbeats(self.repo)
        work += deliver_due(self.repo, self.settings, self.session)
        return work

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("subscription worker step failed")
                busy = 0
            if not busy:
                self.wakeup.wait(self.settings.subscription_poll_seconds)
                self.wakeup.clear()

    def start(self) -> "Worker":
        threading.Thread(target=self.run, name="subscriptions", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()


WorkerFactory = Callable[[Repository, Any], Worker]
