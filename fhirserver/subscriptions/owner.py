"""Who a subscription acts for: the principal that wrote it, stored with it and turned back into
that principal's policy (with the shares in force now) whenever an event is matched, so nobody is
notified of data they could not read themselves."""
from __future__ import annotations

import json
from typing import Any

from fhirserver.access import DenyPolicy, Principal, SmartPolicy, SystemJob, parse_scopes, with_live_shares
from fhirserver.errors import FhirError

JOB = "subscriptions"  # the named job that writes a Subscription's status


def owner_json(actor: Any) -> str | None:
    """The writer's identity as JSON (None: an unknown writer, whose subscription reaches nothing)."""
    if isinstance(actor, SmartPolicy):
        p = actor.p
        return json.dumps({"client_id": p.client_id, "role": p.role, "scope": p.scope_text,
                           "patient": p.patient, "patients": list(p.patients),
                           "organizations": list(p.organizations), "fhir_user": p.fhir_user,
                           "user_pk": p.user_pk})
    if isinstance(actor, SystemJob):
        return json.dumps({"job": actor.name})
    return None


def is_own_job(actor: Any) -> bool:
    return isinstance(actor, SystemJob) and actor.name == JOB


def owner_policy(owner: str | None, engine: Any, settings: Any) -> Any:
    """The owner's policy now; DenyPolicy when the owner is unknown."""
    if not owner:
        return DenyPolicy()
    d = json.loads(owner)
    if "job" in d:
        return SystemJob(d["job"])
    scope = d.get("scope") or ""
    p = Principal(client_id=d["client_id"], role=d["role"], scopes=tuple(parse_scopes(scope.split())),
                  scope_text=scope, patient=d.get("patient"), patients=tuple(d.get("patients") or ()),
                  organizations=tuple(d.get("organizations") or ()), fhir_user=d.get("fhir_user"),
                  user_pk=d.get("user_pk"))
    p = with_live_shares(engine, p, settings)
    return SmartPolicy(p, postgres=engine.dialect.name == "postgresql", base=settings.fhir_base)


def may_read(policy: Any, tx: Any, res_type: str, res_id: str) -> bool:
    """Whether the policy lets its principal read the current resource (the gate's own answer)."""
    try:
        policy.check_interaction("read", res_type)
    except FhirError:
        return False
    cur = tx.current(res_type, res_id, where=policy.row_filter(res_type))
    return cur is not None and not cur.deleted
