"""The gate's decision for a read by id, in a form a statement can be compiled from once.

A read by id is the most frequent request; its SQL differs between callers only by the policy's
row conditions. Naming those conditions by the principal they were built from (a policy's
conditions are a function of its principal) lets storage compile the statement once per
audience instead of once per request, while every read still gets its yes/no from the policy.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

from sqlalchemy.sql.elements import ColumnElement

from fhirserver.errors import FhirError


def read_conditions(policy: Any, interaction: str,
                    res_type: str) -> tuple[Sequence[ColumnElement[bool]], Hashable] | None:
    """(row conditions, a key naming them) for `interaction` (read | vread) of `res_type`, or
    None when the policy refuses it or its conditions cannot be named (the caller then takes
    the full path, which answers the refusal)."""
    try:
        policy.check_interaction(interaction, res_type)
    except FhirError:
        return None
    where = tuple(policy.row_filter(res_type))
    if not where:
        return (), None
    principal = getattr(policy, "principal", None)
    if principal is None:
        return None
    return where, (type(policy).__qualname__, principal)


__all__ = ["read_conditions"]
