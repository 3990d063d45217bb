"""AuditEvents written by the authorization server (through the repository, like any resource).

`audit_token` records every token issued. `audit_access` is the hook for per-access audit
(an entry point calls it with the principal and what was read or written).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _agent(client_id: str, ctx: dict[str, Any], remote: str | None) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
        "who": {"identifier": {"system": "urn:fhirserver:oauth-client", "value": client_id}},
        "requestor": ctx.get("fhirUser") is None,
        **({"network": {"address": remote, "type": "2"}} if remote else {}),
    }]
    if ctx.get("fhirUser"):
        agents.append({"who": {"reference": ctx["fhirUser"]}, "requestor": True})
    return agents


def token_event(client: dict[str, Any], ctx: dict[str, Any], scope: str, grant_type: str,
                remote: str | None) -> dict[str, Any]:
    entity = [{"what": {"reference": f"Patient/{ctx['patient']}"},
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"}}] \
        if ctx.get("patient") else []
    entity.append({"what": {"display": f"OAuth token ({grant_type})"}, "description": scope[:1000]})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": _DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": "urn:fhirserver:audit", "code": "token-issued",
                     "display": "OAuth access token issued"}],
        "action": "E", "recorded": _now(), "outcome": "0",
        "agent": _agent(client["client_id"], ctx, remote),
        "source": {"observer": {"display": "fhirserver authorization server"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": entity,
    }


def audit_token(repo: Any, client: dict[str, Any], ctx: dict[str, Any], scope: str, grant_type: str,
                remote: str | None) -> None:
    with repo.transaction(write=True) as tx:
        tx.create("AuditEvent", token_event(client, ctx, scope, grant_type, remote))


def audit_access(repo: Any, principal: Any, action: str, references: Iterable[str],
                 remote: str | None = None) -> None:
    """Per-access audit hook: `action` is C R U D E; `references` like 'Observation/1'."""
    ctx = {"fhirUser": getattr(principal, "fhir_user", None)}
    body = {
        "resourceType": "AuditEvent",
        "type": {"system": _AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": action, "recorded": _now(), "outcome": "0",
        "agent": _agent(getattr(principal, "client_id", "?"), ctx, remote),
        "source": {"observer": {"display": "fhirserver"}},
        "entity": [{"what": {"reference": ref}} for ref in references],
    }
    with repo.transaction(write=True) as tx:
        tx.create("AuditEvent", body)
