"""The SMART context of a grant: who the user acts for, which patients they may pick, and whether
a grant's context still holds (re-derived from live links, re-checked with the user's own policy)."""
from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError

from fhirserver.access import Principal, parse_scope
from smart_auth import store
from smart_auth.fhir import build_policy
from smart_auth.launch import context_error as _launch_context_error
from smart_auth.links import live_context, live_patients
from smart_auth.web import engine, fhir_base, services


def user_patients(user: dict[str, Any]) -> list[str]:
    """Patients a user acts for now: their own record, or a guardian's linked children."""
    with engine().connect() as c:
        return live_patients(c, user, fhir_base())


def user_context(user: dict[str, Any]) -> dict[str, Any]:
    return {"role": user["role"], "fhirUser": user.get("fhir_user"), "patients": user_patients(user),
            "organizations": list(user["organizations"])}


def patient_choices(user: dict[str, Any], ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, display name) of the patients the user may pick: what their own policy shows them."""
    if user["role"] in ("patient", "guardian") and not ctx["patients"]:
        return []
    principal = Principal("picker", user["role"], (parse_scope("user/Patient.rs"),),  # type: ignore[arg-type]
                          organizations=tuple(ctx["organizations"]), patients=tuple(ctx["patients"]),
                          fhir_user=user.get("fhir_user"), user_pk=user["pk"])
    policy = build_policy(services().repo, services().settings, principal)
    with services().repo.transaction() as tx:
        rows = tx.search("Patient", list(policy.row_filter("Patient")), count=200, with_total=False)[0]
    return [(r.res_id, _name(json.loads(r.body or "{}")) or r.res_id) for r in rows]


def context_error(user: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    """Why the launch/picked context is not this user's to see (see smart_auth.launch)."""
    return _launch_context_error(services().repo, services().settings, user, ctx)


def live_grant_context(user_pk: int | None, context: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(context, user): the grant's context re-derived from the user's live links and re-checked
    against what the user may see now; invalid_grant when it no longer holds (never the old list
    carried over)."""
    if user_pk is None:
        return context, None
    with engine().connect() as c:
        ctx = live_context(c, user_pk, context, fhir_base())
    user = store.get_user(engine(), user_pk)
    if ctx is None or user is None or not user["active"]:
        raise InvalidGrantError("The grant no longer holds: the account or its patient link was removed")
    if context_error(user, ctx):
        raise InvalidGrantError("The grant's patient is no longer one this user may see")
    return ctx, user


def _name(body: dict[str, Any]) -> str:
    for n in body.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = list(n.get("given") or []) + ([n["family"]] if n.get("family") else [])
        if parts:
            return " ".join(parts)
    return ""


__all__ = ["context_error", "live_grant_context", "patient_choices", "user_context", "user_patients"]
