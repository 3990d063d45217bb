"""Who may see an AuditEvent: only a caller who may see every patient it names.

An AuditEvent is in the compartment of each patient it names (`entity.what`), so the plain
compartment rule would show patient A an event about a read of A's and B's records, and with it
B's identity and what was read of B. The rule here narrows the caller's AuditEvent filter: an event
is visible only when each Patient it names is a Patient the caller may see (under the caller's own
Patient filter), for every principal kind alike; full-access principals see all.
"""
from __future__ import annotations

from typing import Callable, Sequence

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.sql.elements import ColumnElement


def _every_named_patient_visible(patient_filter: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    from fhirserver.storage.tables import resource, resource_compartment

    rc = resource_compartment.alias("event_patient")
    # an inner, uncorrelated scan of `resource`: the Patient filter binds to it, not to the event row
    visible = select(resource.c.res_id).where(resource.c.res_type == "Patient", resource.c.deleted.is_(False),
                                              *patient_filter).correlate(None)
    return ~exists(select(1).where(rc.c.res_pk == resource.c.pk, rc.c.comp_type == "Patient",
                                   rc.c.comp_id.notin_(visible)))


def with_audit_event_rule(conds: tuple[ColumnElement[bool], ...], res_type: str | None,
                          patient_filter: Callable[[], Sequence[ColumnElement[bool]]]) -> tuple[ColumnElement[bool], ...]:
    """A row filter (`()` = open) narrowed for AuditEvents."""
    from fhirserver.storage.tables import resource

    if not conds or res_type not in ("AuditEvent", None):
        return conds
    rule = _every_named_patient_visible(patient_filter())
    if res_type is None:
        rule = or_(resource.c.res_type != "AuditEvent", rule)
    return (and_(*conds, rule),)


__all__ = ["with_audit_event_rule"]
