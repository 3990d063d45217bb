"""Launch contexts checked against the user they are handed to.

A launch value (EHR launch) or a picked patient (standalone launch) puts a patient, and maybe an
encounter, into a token; `patient/` scopes then reach that patient's whole compartment. So the
context must be one the authorizing user could see on their own: it is checked with the user's
own policy (their `user/`-level view, consents included) at authorization, at the code exchange,
at every refresh, and whenever the bearer check revalidates the token. A launch minted by a
signed-in user is bound to that user.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from fhirserver.access import Principal, parse_scope
from smart_auth.policy import build_policy

# what a context names, and the type it names
CONTEXT_TYPES = (("patient", "Patient"), ("encounter", "Encounter"))
MINTED_BY = "minted_by_user"  # launch context key: the login whose token minted it


def _viewer(role: str, *, patients: Any = (), organizations: Any = (), fhir_user: str | None = None,
            user_pk: int | None = None, client_id: str = "launch-check") -> Principal:
    """The user's own `user/`-level view of patients and encounters (no patient in context)."""
    scopes = tuple(parse_scope(f"user/{t}.rs") for _k, t in CONTEXT_TYPES)
    return Principal(client_id=client_id, role=role, scopes=scopes, patients=tuple(patients or ()),  # type: ignore[arg-type]
                     organizations=tuple(organizations or ()), fhir_user=fhir_user, user_pk=user_pk)


def visible(repo: Any, settings: Any, viewer: Principal, res_type: str, res_id: str) -> bool:
    """Whether `viewer` may see the current `res_type/res_id` (through the full policy)."""
    policy = build_policy(repo, settings, viewer)
    with repo.transaction() as tx:
        cur = tx.current(res_type, str(res_id), where=list(policy.row_filter(res_type)))
    return cur is not None and not cur.deleted and cur.body is not None


def context_error(repo: Any, settings: Any, user: Mapping[str, Any], ctx: Mapping[str, Any]) -> str | None:
    """Why the patient/encounter of `ctx` is not for this user, or None when it is.

    `ctx` is the grant's context (role, patients, organizations, fhirUser, patient, encounter).
    """
    minted_by = ctx.get(MINTED_BY)
    if minted_by is not None and minted_by != user.get("pk"):
        return "This launch was started by another user"
    viewer = _viewer(str(ctx.get("role") or user["role"]), patients=ctx.get("patients"),
                     organizations=ctx.get("organizations"), fhir_user=ctx.get("fhirUser"),
                     user_pk=user.get("pk"))
    for key, res_type in CONTEXT_TYPES:
        value = ctx.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or not visible(repo, settings, viewer, res_type, value):
            return f"The launch's {key} is not one this user may see"
    return None


def principal_still_allowed(repo: Any, settings: Any):  # noqa: ANN201
    """For the bearer check: is the patient (encounter) of a user's token still theirs to see?"""
    def check(p: Principal) -> bool:
        # patients and guardians: their links are re-derived by the bearer check itself
        if p.user_pk is None or p.role != "staff" or not p.patient:
            return True
        viewer = dataclasses.replace(_viewer(p.role), patients=p.patients, organizations=p.organizations,
                                     fhir_user=p.fhir_user, user_pk=p.user_pk, client_id=p.client_id)
        return visible(repo, settings, viewer, "Patient", p.patient)
    return check


__all__ = ["MINTED_BY", "context_error", "principal_still_allowed", "visible"]
