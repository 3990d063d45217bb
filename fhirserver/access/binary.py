"""Who may see a Binary: whoever may see its `securityContext` (FHIR's rule for Binary).

A Binary holds a file (an uploaded letter, a scanned form) and says nothing about whose it is
but its `securityContext`. Without that link it is restricted data: only full-access principals
see it. With it:
- `securityContext` = `Patient/x`: the Binary is in x's compartment (the index puts it there), so
  the policy's compartment rules apply as to any of x's data, for reads and writes alike.
- `securityContext` = a resource of PROXY_TYPES (a DocumentReference): the Binary is visible to a
  caller exactly when that resource is, under the caller's own filter for that type.
Nothing else makes a Binary visible: in particular a DocumentReference that *points at* a Binary
(its attachment url) grants nothing, or anyone could write one pointing at another patient's
file and read it through a trusting deputy (the portal).
"""
from __future__ import annotations

from typing import Callable, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.search import SECURITY_CONTEXT_PARAM as PARAM
from fhirserver.storage import idx_reference, resource

# resource types a Binary may take its access rules from, besides Patient (kept small: each adds
# that type's filter to every Binary query)
PROXY_TYPES = ("DocumentReference",)
# types outside the Patient compartment whose writes are checked against the patients they name
PATIENT_LINKED_TYPES = frozenset({"Binary"})


def _via_proxy(filter_for: Callable[[str], Sequence[ColumnElement[bool]]]) -> ColumnElement[bool] | None:
    """Binaries whose securityContext is a proxy resource the caller may see."""
    ref = idx_reference.alias("binary_context")
    branches = []
    for proxy in PROXY_TYPES:
        conds = list(filter_for(proxy))
        # an inner, uncorrelated scan of `resource` for the proxy rows: the proxy's own filter
        # (written against `resource`) binds to this inner table, not to the outer Binary row
        visible = select(resource.c.res_id).where(resource.c.res_type == proxy, resource.c.deleted.is_(False),
                                                  *conds).correlate(None)
        branches.append(and_(ref.c.target_type == proxy, ref.c.target_id.in_(visible)))
    if not branches:
        return None
    return resource.c.pk.in_(select(ref.c.res_pk).where(ref.c.res_type == "Binary", ref.c.param == PARAM,
                                                         or_(*branches)))


def with_security_context(conds: tuple[ColumnElement[bool], ...], res_type: str | None, binary_allowed: bool,
                          filter_for: Callable[[str], Sequence[ColumnElement[bool]]]) -> tuple[ColumnElement[bool], ...]:
    """A row filter (`()` = open) widened by the Binaries visible through their securityContext.

    `binary_allowed`: the caller holds a scope reading Binary at all (the proxy never grants a
    type the scopes do not)."""
    if not conds or not binary_allowed or res_type not in ("Binary", None):
        return conds
    extra = _via_proxy(filter_for)
    if extra is None:
        return conds
    if res_type is None:
        extra = and_(resource.c.res_type == "Binary", extra)
    return (or_(and_(*conds), extra),)


__all__ = ["PATIENT_LINKED_TYPES", "PROXY_TYPES", "with_security_context"]
