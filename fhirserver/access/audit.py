"""Who may see an AuditEvent: only a caller who may see every patient it names.

An AuditEvent is in the compartment of each patient it names (as agent or entity), so the
compartment rule alone would show patient A the event "staff merged A into B", or "Dr X read
A's and B's reports", and with it B's id and what was done to B. The rule here adds, for every
caller that does not see everything, the condition that no Patient compartment row of the event
lies outside the patients the scope reaches (the patient in context, the user's own patients,
or, for staff and organization-bound clients, their organizations' patients and explicit shares).
Imaging-only and date-window shares do not reach AuditEvents.
"""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import and_, exists, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

AUDIT_TYPE = "AuditEvent"


def every_named_patient_visible(p: Any, ids: Sequence[str] | None, context: str,
                                res_type: str | None) -> ColumnElement[bool] | None:
    """The SQL condition on `resource` for `res_type` (None: any type) under a scope of `context`
    ('patient' | 'user' | 'system') of principal `p` reaching patients `ids` (plus, for staff and
    clients, their organizations' patients), or None when it adds nothing."""
    from fhirserver.storage.tables import idx_reference, resource, resource_compartment

    if res_type not in (None, AUDIT_TYPE):
        return None
    if context != "patient" and p.unrestricted:
        return None
    r, rc = resource, resource_compartment.alias("audit_named")
    ids = tuple(ids or ())
    reached: list[ColumnElement[bool]] = []
    if ids:
        reached.append(rc.c.comp_id.in_(ids))
    if context != "patient" and p.role in ("staff", "system") and p.organizations:
        pat = resource.alias("audit_org_patient")
        ref = idx_reference.alias("audit_org_ref")
        reached.append(rc.c.comp_id.in_(select(pat.c.res_id).where(
            pat.c.res_type == "Patient", pat.c.pk == ref.c.res_pk, ref.c.res_type == "Patient",
            ref.c.param == "organization", ref.c.target_type == "Organization",
            ref.c.target_id.in_(p.organizations))))
    outside = not_(or_(*reached)) if reached else true()
    rule = ~exists(select(1).where(rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient", outside))
    if res_type == AUDIT_TYPE:
        return rule
    return or_(r.c.res_type != AUDIT_TYPE, and_(r.c.res_type == AUDIT_TYPE, rule))


__all__ = ["every_named_patient_visible"]
