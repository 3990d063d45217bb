"""Notification Bundles in the backport IG's R4 shape: a `history` Bundle whose first entry is the
SubscriptionStatus as Parameters (profile backport-subscription-status-r4), then the focus
resources as the payload content asks (none, references only, or the resources)."""
from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone
from typing import Any

from fhirserver.model import loads
from fhirserver.subscriptions.spec import EXT

STATUS_PROFILE = EXT + "backport-subscription-status-r4"


@dataclasses.dataclass(frozen=True)
class Event:
    number: int
    timestamp_ms: int
    res_type: str
    res_id: str
    version_id: int
    body: str | None     # the focus's JSON when it may be sent (full-resource), else None
    created: bool        # version 1: POST in the entry's request


def instant(ms_value: int) -> str:
    return datetime.fromtimestamp(ms_value / 1000, timezone.utc).isoformat(timespec="milliseconds")


def status_parameters(base: str, sub_id: str, topic: str, status: str, kind: str, events_since: int,
                      events: list[Event], content: str, error: str | None = None) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub_id}"}},
        {"name": "topic", "valueCanonical": topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since)},
    ]
    if content == "empty":  # the IG: no topic in empty payloads
        params = [p for p in params if p["name"] != "topic"]
    for ev in events:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(ev.number)},
                                       {"name": "timestamp", "valueInstant": instant(ev.timestamp_ms)}]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {
                "reference": f"{base}/{ev.res_type}/{ev.res_id}/_history/{ev.version_id}"}})
        params.append({"name": "notification-event", "part": parts})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def bundle(base: str, status: dict[str, Any], sub_id: str, events: list[Event], content: str,
           kind_of_bundle: str = "history", status_op: str = "$status") -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status['id']}", "resource": status,
        "request": {"method": "GET", "url": f"{base}/Subscription/{sub_id}/{status_op}"},
        "response": {"status": "200"}}]
    if content != "empty":
        for ev in events:
            entry: dict[str, Any] = {"fullUrl": f"{base}/{ev.res_type}/{ev.res_id}"}
            if content == "full-resource" and ev.body is not None:
                entry["resource"] = loads(ev.body)
            entry["request"] = ({"method": "POST", "url": ev.res_type} if ev.created
                                else {"method": "PUT", "url": f"{ev.res_type}/{ev.res_id}"})
            entry["response"] = {"status": "201" if ev.created else "200"}
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind_of_bundle,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "entry": entries}
