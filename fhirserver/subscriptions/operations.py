"""`Subscription/[id]/$status` and `Subscription/[id]/$events` (backport IG, R4 shapes).

Both read the Subscription through the caller's row filter first (no existence leak), and
`$events` includes a focus resource only when the caller may read it now.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from fhirserver.interactions import FhirResponse, check_id
from fhirserver.errors import FhirError
from fhirserver.model import parse_count
from fhirserver.subscriptions.notification import Event, bundle, status_parameters
from fhirserver.subscriptions.owner import may_read
from fhirserver.subscriptions.spec import CONTENTS, Spec
from fhirserver.subscriptions.tables import subscription_delivery, subscription_state

MAX_EVENTS = 1000


def _subscription(ctx: Any, tx: Any, req: Any, op: str) -> Any:
    if req.res_type != "Subscription":
        raise FhirError(400, f"{op} runs on a Subscription: /Subscription/{{id}}/{op}", "invalid")
    sub_id = req.res_id or req.param("id")
    if not sub_id:
        raise FhirError(400, f"{op} needs a Subscription id (/Subscription/{{id}}/{op})", "required")
    sub_id = check_id(sub_id)
    ctx.access.check_interaction("read", "Subscription")
    cur = tx.current("Subscription", sub_id, where=ctx.access.row_filter("Subscription"))
    if cur is None or cur.deleted:
        raise FhirError(404, f"Subscription/{sub_id} is not known", "not-found")
    state = tx.conn.execute(select(subscription_state).where(subscription_state.c.sub_id == sub_id)).first()
    if state is None:
        raise FhirError(404, f"Subscription/{sub_id} is not a topic-based subscription", "not-found")
    return state


def status(ctx: Any, tx: Any, req: Any) -> Any:
    state = _subscription(ctx, tx, req, "$status")
    spec = Spec.from_json(json.loads(state.spec))
    params = status_parameters(ctx.base, state.sub_id, spec.topic, state.status, "query-status",
                               state.event_count, [], "id-only", state.error)
    return FhirResponse(200, {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
        {"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}}]})


def _number(req: Any, name: str) -> int | None:
    raw = req.param(name)
    if raw is None:
        return None
    value = parse_count(raw)
    if value is None:
        raise FhirError(400, f"{name} must be a non-negative integer, not '{raw}'", "invalid")
    return value


def events(ctx: Any, tx: Any, req: Any) -> Any:
    state = _subscription(ctx, tx, req, "$events")
    spec = Spec.from_json(json.loads(state.spec))
    low, high = _number(req, "eventsSinceNumber"), _number(req, "eventsUntilNumber")
    content = req.param("content") or spec.content
    if content not in CONTENTS:
        raise FhirError(400, f"content must be one of {', '.join(CONTENTS)}", "invalid")
    d = subscription_delivery
    q = select(d).where(d.c.sub_id == state.sub_id, d.c.kind == "event-notification")
    if low is not None:
        q = q.where(d.c.event_number >= low)
    if high is not None:
        q = q.where(d.c.event_number <= high)
    rows = tx.conn.execute(q.order_by(d.c.event_number).limit(MAX_EVENTS)).all()
    found: list[Event] = []
    for row in rows:
        if not may_read(ctx.access, tx, row.res_type, row.res_id):
            continue  # the caller is shown only events about data it may read itself
        body = None
        if content == "full-resource":
            version = tx.version(row.res_type, row.res_id, row.version_id)
            body = version.body if version is not None else None
        found.append(Event(row.event_number, row.event_time, row.res_type, row.res_id, row.version_id,
                           body, row.version_id == 1))
    params = status_parameters(ctx.base, state.sub_id, spec.topic, state.status, "query-event",
                               state.event_count, found, content, state.error)
    return FhirResponse(200, bundle(ctx.base, params, state.sub_id, found, content, status_op="$events"))
