"""The write hook: events and subscription state written inside the writer's transaction.

A rolled-back write rolls its event back with it; a committed one always has its event row, so
a crash after the commit loses nothing (the worker picks the row up when it runs again).
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from sqlalchemy import delete, insert, select, update

from fhirserver.model import loads
from fhirserver.subscriptions.owner import is_own_job, owner_json
from fhirserver.subscriptions.queueing import enqueue_delivery, enqueue_dispatch
from fhirserver.subscriptions.spec import is_topic_based, parse_spec
from fhirserver.subscriptions.tables import subscription_delivery, subscription_event, subscription_state
from fhirserver.subscriptions.topics import TOPIC_TYPES, topics_for

LIVE = ("requested", "active")


def ms() -> int:
    return int(time.time() * 1000)


def make_write_hook(base: str, jobs: Any) -> Callable[[Any, Any, str | None], None]:
    """The `Repository.write_hooks` entry for a server whose FHIR base is `base`; the work it
    causes goes on `jobs` (the queue) in the same transaction."""

    def hook(tx: Any, stored: Any, previous: str | None) -> None:
        if stored.res_type == "Subscription":
            if _sync_subscription(tx, stored, base):
                enqueue_delivery(jobs, tx, stored.res_id)
        elif stored.res_type in TOPIC_TYPES:
            if _record_events(tx, stored, previous):
                enqueue_dispatch(jobs, tx)

    return hook


def _record_events(tx: Any, stored: Any, previous: str | None) -> bool:
    new = loads(stored.body) if stored.body else None
    old = loads(previous) if previous else None
    recorded = False
    for topic in topics_for(stored.res_type):
        if not topic.trigger(old, new):
            continue
        s = subscription_state
        if tx.conn.execute(select(s.c.sub_id).where(s.c.topic == topic.url, s.c.status.in_(LIVE))
                           .limit(1)).first() is None:
            continue  # nobody listens: no row to keep
        tx.conn.execute(insert(subscription_event).values(
            topic=topic.url, res_type=stored.res_type, res_id=stored.res_id,
            version_id=stored.version_id, created=ms(), dispatched=False))
        recorded = True
    return recorded


def _sync_subscription(tx: Any, stored: Any, base: str) -> bool:
    """Keep the server's state of a written Subscription; True when a handshake is to be sent."""
    s, d = subscription_state, subscription_delivery
    if stored.deleted or not is_topic_based(loads(stored.body)):
        # deleting stops delivery: nothing pending is sent after the commit (so does turning it
        # into a criteria-based subscription, which this server keeps but never notifies)
        tx.conn.execute(delete(s).where(s.c.sub_id == stored.res_id))
        tx.conn.execute(update(d).where(d.c.sub_id == stored.res_id, d.c.state == "pending")
                        .values(state="dropped"))
        return False
    if is_own_job(tx.actor):
        return False  # the worker recording a status it already holds
    spec = parse_spec(loads(stored.body), base)  # FhirError 422 rolls the whole write back
    status = "off" if spec.off else "requested"
    values = {"topic": spec.topic, "status": status, "spec": json.dumps(spec.to_json()),
              "owner": owner_json(tx.actor), "error": None}
    exists = tx.conn.execute(select(s.c.sub_id).where(s.c.sub_id == stored.res_id)).first()
    now = ms()
    if exists:
        tx.conn.execute(update(s).where(s.c.sub_id == stored.res_id).values(**values))
        tx.conn.execute(update(d).where(d.c.sub_id == stored.res_id, d.c.state == "pending",
                                        d.c.kind != "event-notification").values(state="dropped"))
    else:
        tx.conn.execute(insert(s).values(sub_id=stored.res_id, event_count=0, created=now, **values))
    if status == "requested":  # the handshake proves the endpoint before any event goes there
        tx.conn.execute(insert(d).values(sub_id=stored.res_id, kind="handshake", event_time=now,
                                         state="pending", attempts=0, next_attempt=now))
    return status == "requested"
