"""Helpers shared by the lifecycle operations: parameters, principal, audit, emails."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Any, Iterable

from fhirserver.errors import FhirError
from fhirserver.model import is_valid_id, reference_id
from fhirserver.audit import AuditTrail
from fhirserver.interactions import check_id
from fhirserver.operations import ports
from fhirserver.storage import resource

EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
SHARING = "urn:fhirserver:sharing"
IMAGING_TYPES = ("ImagingStudy", "Media")


def now() -> int:
    return int(time.time())


def instant() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def services(ctx: Any) -> Any:
    """The server's services (settings, repository), handed in by whoever built the Context."""
    if ctx.services is None:
        raise FhirError(500, "This operation needs the server's services", "exception")
    return ctx.services


def principal(ctx: Any) -> Any:
    """The SMART Principal of the request, or None (no-auth mode / internal callers)."""
    return ctx.principal


def role(ctx: Any) -> str:
    p = principal(ctx)
    return "admin" if p is None else p.role


def params(req: Any) -> dict[str, Any]:
    """Operation parameters from the query string and a Parameters body (body wins)."""
    out: dict[str, Any] = {k: v for k, v in req.params}
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            name = p.get("name")
            if not name:
                continue
            if "resource" in p:
                out[name] = p["resource"]
                continue
            for k, v in p.items():
                if k.startswith("value"):
                    out[name] = v
                    break
    return out


def truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("true", "1", "yes"))


def ref_id(v: Any, res_type: str, base: str | None = None) -> str | None:
    """The id in 'Patient/1', {'reference': 'Patient/1'} (the canonical parser) or a bare '1'."""
    if isinstance(v, str) and is_valid_id(v):
        return v
    return reference_id(v, res_type, base)


def emails_of(body: dict[str, Any]) -> list[str]:
    return [t["value"].strip().lower() for t in body.get("telecom") or []
            if t.get("system") == "email" and isinstance(t.get("value"), str) and t["value"].strip()]


def check_email(email: str | None) -> str:
    if not email:
        raise FhirError(422, "An email address is required", "required")
    email = email.strip().lower()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise FhirError(422, f"'{email}' is not a valid email address", "value")
    return email


def visible(ctx: Any, tx: Any, res_type: str, res_id: str) -> dict[str, Any]:
    """The current body the caller may see, else 404 (no existence leak)."""
    check_id(res_id)
    cur = tx.current(res_type, res_id, where=ctx.access.row_filter(res_type))
    if cur is None or cur.deleted or cur.body is None:
        raise FhirError(404, f"{res_type}/{res_id} is not known", "not-found")
    return json.loads(cur.body)


def visible_keys(ctx: Any, tx: Any, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (type, id) pairs among `keys` whose current resource the caller may see, in order."""
    from sqlalchemy import select

    by_type: dict[str, list[str]] = {}
    keys = list(keys)
    for t, i in keys:
        by_type.setdefault(t, []).append(i)
    seen: set[tuple[str, str]] = set()
    tx.flush()
    for t, ids in by_type.items():
        for chunk in range(0, len(ids), 500):
            rows = tx.conn.execute(select(resource.c.res_id).where(
                resource.c.res_type == t, resource.c.res_id.in_(ids[chunk:chunk + 500]),
                resource.c.deleted.is_(False), *ctx.access.row_filter(t))).scalars()
            seen.update((t, i) for i in rows)
    return [k for k in keys if k in seen]


def audit(tx: Any, ctx: Any, action: str, refs: Iterable[str], what: str, detail: str = "") -> None:
    """An AuditEvent in the operation's own transaction."""
    p = principal(ctx)
    agent: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150",
                             "display": "Application"}]},
        "who": {"identifier": {"system": "urn:fhirserver:oauth-client",
                               "value": getattr(p, "client_id", None) or "internal"}},
        "requestor": not getattr(p, "fhir_user", None)}]
    if getattr(p, "fhir_user", None):
        agent.append({"who": {"reference": p.fhir_user}, "requestor": True})
    entity = [{"what": {"reference": r}} for r in refs]
    if detail:
        entity.append({"what": {"display": what}, "description": detail[:1000]})

    AuditTrail.write(tx, [{
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "urn:fhirserver:audit", "code": what}],
        "action": action, "recorded": instant(), "outcome": "0", "agent": agent,
        "source": {"observer": {"display": "fhirserver"}}, "entity": entity}])


def parameters(*pairs: tuple[str, Any]) -> dict[str, Any]:
    out = []
    for name, v in pairs:
        if isinstance(v, bool):
            out.append({"name": name, "valueBoolean": v})
        elif isinstance(v, int):
            out.append({"name": name, "valueInteger": v})
        elif isinstance(v, dict) and "resourceType" in v:
            out.append({"name": name, "resource": v})
        elif isinstance(v, dict) and "reference" in v:
            out.append({"name": name, "valueReference": v})
        else:
            out.append({"name": name, "valueString": str(v)})
    return {"resourceType": "Parameters", "parameter": out}


def root_url(ctx: Any) -> str:
    return services(ctx).root_url()


def port(ctx: Any, name: str) -> Any:
    """The owner of other tables this operation needs (`fhirserver.operations.ports`)."""
    return ports.port(services(ctx), name)
