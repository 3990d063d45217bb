"""AuditEvents written by the authorization server (through the repository, like any resource).

`audit_token` records every token issued, through the one AuditEvent writer
(`fhirserver.audit.AuditTrail`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

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
    from fhirserver.audit import AuditTrail

    with repo.transaction(write=True) as tx:
        AuditTrail.write(tx, [token_event(client, ctx, scope, grant_type, remote)])
