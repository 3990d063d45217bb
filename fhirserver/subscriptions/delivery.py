"""Delivery on the job queue: events become numbered notifications and are POSTed in order.

Three job kinds, all run as the named job `subscriptions`:

- `subscriptions.dispatch` (enqueued with the event, in the writer's transaction): each new
  outbox event is matched against the live subscriptions of its topic (filters, then the
  owner's own read access through the gate); a match takes the subscription's next event number
  and becomes a pending delivery. Events are taken in order under a row lock, so event numbers
  follow the order of the writes.
- `subscriptions.deliver` (one per subscription and notification, deduplicated per
  subscription so notifications go out in order): leases the subscription's oldest pending
  delivery, POSTs it, and marks it sent, then queues the next one. A failure waits with
  exponential backoff (a new job at `next_attempt`); after `subscription_attempts` POSTs the
  subscription goes to `error`. A handshake that succeeds makes a requested subscription active.
  A worker killed mid-POST loses the job's lease; the job runs again and the POST is repeated.
- `subscriptions.heartbeat`: rescheduled every heartbeat period while the subscription is active.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import requests
from sqlalchemy import and_, insert, or_, select, update

from fhirserver.model import dumps, loads
from fhirserver.storage import Repository, VersionConflict, reading
from fhirserver.subscriptions.notification import Event, bundle, status_parameters
from fhirserver.subscriptions.outbox import LIVE, ms
from fhirserver.subscriptions.owner import may_read, owner_policy
from fhirserver.subscriptions.queueing import (
    AS, DELIVER_JOB, DISPATCH_JOB, HEARTBEAT_JOB, enqueue_delivery, enqueue_heartbeat,
)
from fhirserver.subscriptions.spec import Spec
from fhirserver.subscriptions.tables import subscription_delivery, subscription_event, subscription_state
from fhirserver.subscriptions.topics import BY_URL, matches

log = logging.getLogger("fhirserver.subscriptions")
S, E, D = subscription_state, subscription_event, subscription_delivery
# -- dispatch ------------------------------------------------------------------------------------
def dispatch_events(repo: Repository, settings: Any, jobs: Any, limit: int = 200) -> int:
    """Number the new events for the subscriptions they concern; returns how many were taken."""
    with reading(repo.engine) as c:  # a read first: the write lock only when there is work
        if c.execute(select(E.c.pk).where(E.c.dispatched.is_(False)).limit(1)).first() is None:
            return 0
    with repo.transaction(write=True) as tx:
        q = select(E).where(E.c.dispatched.is_(False)).order_by(E.c.pk).limit(limit)
        if tx.postgres:
            q = q.with_for_update()
        rows = tx.conn.execute(q).all()
        policies: dict[str, Any] = {}
        to_send: set[str] = set()
        for ev in rows:
            subs = tx.conn.execute(select(S).where(S.c.topic == ev.topic, S.c.status.in_(LIVE),
                                                   S.c.created <= ev.created).order_by(S.c.sub_id)).all()
            version = tx.version(ev.res_type, ev.res_id, ev.version_id) if subs else None
            body = loads(version.body) if version is not None and version.body else None
            for sub in subs:
                spec = Spec.from_json(json.loads(sub.spec))
                topic = BY_URL.get(spec.topic)
                if body is None or topic is None or spec.off or (spec.end_ms and ev.created > spec.end_ms):
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
                if sub.status == "active":  # a requested one sends them once its handshake succeeded
                    to_send.add(sub.sub_id)
            tx.conn.execute(update(E).where(E.c.pk == ev.pk).values(dispatched=True))
        for sub_id in sorted(to_send):
            enqueue_delivery(jobs, tx, sub_id)
        return len(rows)


# -- one delivery --------------------------------------------------------------------------------
def _oldest_pending(repo: Repository, sub_id: str) -> Any:
    with repo.engine.connect() as c:
        return c.execute(select(D, S.c.status.label("sub_status")).join(S, S.c.sub_id == D.c.sub_id)
                         .where(D.c.sub_id == sub_id, D.c.state == "pending")
                         .order_by(D.c.kind != "handshake", D.c.pk).limit(1)).first()


def _lease(repo: Repository, settings: Any, row: Any) -> int | None:
    """Lease the delivery (None: another job is sending it right now)."""
    now = ms()
    lease = now + settings.subscription_lease_seconds * 1000
    with repo.engine.begin() as c:
        got = c.execute(update(D).where(
            D.c.pk == row.pk, D.c.state == "pending", or_(D.c.lease_until.is_(None), D.c.lease_until < now))
            .values(lease_until=lease, attempts=D.c.attempts + 1)).rowcount
    return lease if got == 1 else None


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
            tx.actor = AS
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


def _finish(repo: Repository, settings: Any, jobs: Any, row: Any, lease: int, problem: str | None) -> None:
    now = ms()
    attempts = row.attempts + 1
    mine = and_(D.c.pk == row.pk, D.c.lease_until == lease, D.c.state == "pending")
    became: tuple[str, str | None] | None = None
    with repo.transaction(write=True) as tx:
        c = tx.conn
        if problem is None:
            if c.execute(update(D).where(mine).values(state="sent", sent_at=now, lease_until=None,
                                                      last_error=None)).rowcount != 1:
                return
            c.execute(update(S).where(S.c.sub_id == row.sub_id).values(last_sent=now))
            if row.kind == "handshake" and c.execute(
                    update(S).where(S.c.sub_id == row.sub_id, S.c.status == "requested")
                    .values(status="active", error=None)).rowcount:
                became = ("active", None)
                spec_text = c.execute(select(S.c.spec).where(S.c.sub_id == row.sub_id)).scalar_one()
                spec = Spec.from_json(json.loads(spec_text))
                if spec.heartbeat:
                    enqueue_heartbeat(jobs, tx, row.sub_id, now + spec.heartbeat * 1000)
            more = c.execute(select(D.c.pk).where(D.c.sub_id == row.sub_id, D.c.state == "pending").limit(1)).first()
            if more is not None:
                enqueue_delivery(jobs, tx, row.sub_id)
        elif attempts >= settings.subscription_attempts:
            if c.execute(update(D).where(mine).values(state="failed", lease_until=None,
                                                      last_error=problem)).rowcount != 1:
                return
            msg = f"Delivery failed {attempts} times: {problem}"
            if c.execute(update(S).where(S.c.sub_id == row.sub_id, S.c.status.in_(LIVE))
                         .values(status="error", error=msg)).rowcount:
                became = ("error", msg)
        else:
            wait_ms = int(settings.subscription_backoff_seconds * 2 ** (attempts - 1) * 1000)
            c.execute(update(D).where(mine).values(lease_until=None, last_error=problem,
                                                   next_attempt=now + wait_ms))
            enqueue_delivery(jobs, tx, row.sub_id, run_at_ms=now + wait_ms)
    if became:
        set_resource_status(repo, row.sub_id, *became)


def deliver_next(repo: Repository, settings: Any, jobs: Any, session: requests.Session, sub_id: str) -> bool:
    """Send the subscription's oldest pending notification; False when there was nothing to do now."""
    row = _oldest_pending(repo, sub_id)
    if row is None:
        return False
    if not (row.sub_status == "active" or (row.sub_status == "requested" and row.kind == "handshake")):
        return False  # waits for the handshake (requested) or for a client's update (error, off)
    if row.next_attempt > ms():
        with repo.engine.begin() as c:  # woken early (a new event): run again when it is due
            enqueue_delivery(jobs, c, sub_id, run_at_ms=row.next_attempt)
        return False
    lease = _lease(repo, settings, row)
    if lease is None:
        return False  # another job sends it; it queues the next one when done
    built = _notification(repo, settings, row)
    if built is None:
        return False
    spec, payload = built
    problem = _post(session, spec, payload)
    if problem:
        log.warning("subscription %s: %s (attempt %s)", sub_id, problem, row.attempts + 1)
    _finish(repo, settings, jobs, row, lease, problem)
    return True


def schedule_heartbeat(repo: Repository, jobs: Any, sub_id: str) -> None:
    """A heartbeat if nothing was sent for the period, and the next check one period later."""
    now = ms()
    with repo.transaction(write=True) as tx:
        sub = tx.conn.execute(select(S).where(S.c.sub_id == sub_id)).first()
        if sub is None or sub.status != "active":
            return
        period = Spec.from_json(json.loads(sub.spec)).heartbeat * 1000
        if not period:
            return
        last = sub.last_sent or sub.created
        if last + period <= now:
            busy = tx.conn.execute(select(D.c.pk).where(D.c.sub_id == sub_id, D.c.state == "pending")
                                   .limit(1)).first()
            if busy is None:
                tx.conn.execute(insert(D).values(sub_id=sub_id, kind="heartbeat", event_time=now,
                                                 state="pending", attempts=0, next_attempt=now))
                tx.conn.execute(update(S).where(S.c.sub_id == sub_id).values(last_sent=now))
                enqueue_delivery(jobs, tx, sub_id)
            last = now
        enqueue_heartbeat(jobs, tx, sub_id, last + period)


def register_jobs(jobs: Any, repo: Repository, settings: Any) -> None:
    """The three job kinds on this queue (app factory)."""
    session = requests.Session()

    def dispatch(_ctx: Any) -> None:
        while dispatch_events(repo, settings, jobs):
            pass

    def deliver(ctx: Any) -> None:
        deliver_next(repo, settings, jobs, session, ctx.payload["sub"])

    def heartbeat(ctx: Any) -> None:
        schedule_heartbeat(repo, jobs, ctx.payload["sub"])

    lease = float(settings.subscription_lease_seconds)
    jobs.register(DISPATCH_JOB, dispatch, max_attempts=10, backoff_seconds=1.0, lease_seconds=lease)
    jobs.register(DELIVER_JOB, deliver, max_attempts=10, backoff_seconds=1.0, lease_seconds=lease)
    jobs.register(HEARTBEAT_JOB, heartbeat, max_attempts=10, backoff_seconds=1.0, lease_seconds=lease)
