"""Who may write the records that grant access or account for it.

A sharing Consent opens a patient's record to another organization, so only the patient (or a
guardian) grants one; a clinic's staff may record consents that keep data inside their own
organizations, or that deny. AuditEvents account for every access, so only the server (or a
full-access principal) writes them: nobody edits the trail of who read their record.
"""
from __future__ import annotations

from typing import Any

from fhirserver.model import parse_reference

PLATFORM_CATEGORY = ("urn:fhirserver:sharing", "platform-imaging")


def _actors(provision: dict[str, Any]) -> list[Any]:
    out = [a.get("reference") for a in provision.get("actor") or [] if isinstance(a, dict)]
    for nested in provision.get("provision") or []:
        if isinstance(nested, dict):
            out += _actors(nested)
    return out


def consent_write_error(principal: Any, body: dict[str, Any], base: str | None) -> str | None:
    """Why this principal may not write this Consent (None: it may)."""
    if principal.role in ("patient", "guardian") or principal.unrestricted:
        return None
    prov = body.get("provision") or {}
    if prov.get("type", "permit") != "permit":
        return None
    for cat in body.get("category") or []:
        for coding in (cat or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) == PLATFORM_CATEGORY:
                return "Only the patient (or a guardian) opens their imaging to the platform"
    for ref in _actors(prov):
        parsed = parse_reference(ref, base)
        if parsed.res_type == "Organization" and parsed.res_id in principal.organizations:
            continue
        if parsed.local and f"{parsed.res_type}/{parsed.res_id}" == principal.fhir_user:
            continue
        return "Only the patient (or a guardian) shares their record with another organization or person"
    return None


def audit_write_error(principal: Any) -> str | None:
    if principal.unrestricted:
        return None
    return "AuditEvents are written by the server; they cannot be created, changed or deleted"


__all__ = ["audit_write_error", "consent_write_error"]
