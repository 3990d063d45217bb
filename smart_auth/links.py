"""Which patients a login acts for, derived live from its links, and a grant's context re-checked
against them.

A patient login acts for its own Patient (`fhirUser`) and the patients its account lists; a
guardian for the children its RelatedPerson resources name. A token (and its refresh token)
carries the list it was issued with, but what is in force is re-derived here: by the bearer check
whenever it (re)validates a token, and by every refresh. So removing a link takes effect at once,
wherever it happens: deleting the RelatedPerson, pointing it at another patient, marking it
inactive, editing the login's patient list, closing or erasing the account. A grant never gains a
patient here: the live list is intersected with what was consented to.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection

from fhirserver.model import reference_id
from smart_auth.store import user_on


def guardian_links(conn: Connection, user: Mapping[str, Any]) -> set[str]:
    """Ids of the RelatedPerson resources that make this login a guardian: its fhirUser, those it
    was invited for, and those carrying its login email."""
    from fhirserver.access import lifecycle_account, lifecycle_invitation
    from fhirserver.storage import idx_token, resource

    ids: set[str] = set()
    fu = user.get("fhir_user") or ""
    if fu.startswith("RelatedPerson/"):
        ids.add(fu.split("/", 1)[1])
    pk = user["pk"]
    for table in (lifecycle_invitation, lifecycle_account):
        ids.update(conn.execute(select(table.c.res_id).where(
            table.c.user_pk == pk, table.c.res_type == "RelatedPerson")).scalars())
    username = (user.get("username") or "").strip().lower()
    if "@" in username:
        ids.update(conn.execute(select(resource.c.res_id).where(
            resource.c.res_type == "RelatedPerson", resource.c.pk.in_(select(idx_token.c.res_pk).where(
                idx_token.c.res_type == "RelatedPerson", idx_token.c.param == "email",
                idx_token.c.code == username)))).scalars())
    return ids


def _named_patient(body: Any, base: str | None) -> str | None:
    return reference_id((body or {}).get("patient"), "Patient", base) if isinstance(body, dict) else None


def live_patients(conn: Connection, user: Mapping[str, Any], base: str | None = None) -> list[str]:
    """The patients the login acts for now ([] for an inactive login)."""
    from fhirserver.storage import resource, resource_history

    if not user.get("active"):
        return []
    listed = [str(p) for p in user.get("patients") or []]
    fu = user.get("fhir_user") or ""
    if user["role"] == "patient":
        if fu.startswith("Patient/") and fu[8:] not in listed:
            listed.append(fu[8:])
        return listed
    if user["role"] != "guardian":
        return listed
    listed = _existing_children(conn, listed, base)
    rps = sorted(guardian_links(conn, user))
    now: set[str] = set()
    if rps:
        for deleted, text in conn.execute(select(resource.c.deleted, resource.c.body).where(
                resource.c.res_type == "RelatedPerson", resource.c.res_id.in_(rps))).all():
            body = _loads(text) if text and not deleted else None
            if isinstance(body, dict) and body.get("active") is not False:
                pid = _named_patient(body, base)
                if pid:
                    now.add(pid)
    if not listed:
        return sorted(now)
    if all(p in now for p in listed):
        return listed
    # Some listed child is named by no live link: was it ever named by one (then that link was
    # removed), or listed by an administrator without any RelatedPerson (then it stays)?
    ever: set[str] = set()
    if rps:
        for text in conn.execute(select(resource_history.c.body).where(
                resource_history.c.res_type == "RelatedPerson", resource_history.c.res_id.in_(rps),
                resource_history.c.body.isnot(None))).scalars():
            pid = _named_patient(_loads(text), base)
            if pid:
                ever.add(pid)
    ever |= _named_by_email_history(conn, user, base)
    return [p for p in listed if p in now or p not in ever]


def _loads(text: Any) -> Any:
    return json.loads(text) if isinstance(text, (str, bytes)) else text


def _named_by_email_history(conn: Connection, user: Mapping[str, Any], base: str | None) -> set[str]:
    """Children named by any version of a RelatedPerson that carried the login's email: a deleted
    RelatedPerson has no index rows left, only its history."""
    from sqlalchemy import Text, cast

    from fhirserver.storage import resource_history

    email = (user.get("username") or "").strip().lower()
    if "@" not in email:
        return set()
    needle = "%" + email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    out: set[str] = set()
    for text in conn.execute(select(resource_history.c.body).where(
            resource_history.c.res_type == "RelatedPerson", resource_history.c.body.isnot(None),
            cast(resource_history.c.body, Text).ilike(needle, escape="\\"))).scalars():
        body = _loads(text)
        emails = {str(t.get("value", "")).strip().lower() for t in (body or {}).get("telecom") or []
                  if isinstance(t, dict) and t.get("system") == "email"}
        pid = _named_patient(body, base) if email in emails else None
        if pid:
            out.add(pid)
    return out


def _existing_children(conn: Connection, listed: list[str], base: str | None) -> list[str]:
    """The listed children whose record still exists, each followed by the record it was merged
    into (`replaced-by`: `$merge` repoints the RelatedPerson there). A deleted or erased record
    ends the link, so an id used again later never opens someone else's record."""
    from fhirserver.storage import resource

    if not listed:
        return []
    bodies = {rid: _loads(text) for rid, deleted, text in conn.execute(
        select(resource.c.res_id, resource.c.deleted, resource.c.body).where(
            resource.c.res_type == "Patient", resource.c.res_id.in_(listed))).all() if text and not deleted}
    out: list[str] = []
    for pid in listed:
        body = bodies.get(pid)
        if body is None:
            continue
        out.append(pid)
        for link in body.get("link") or []:
            target = reference_id(link.get("other"), "Patient", base) if link.get("type") == "replaced-by" else None
            if target and target not in out:
                out.append(target)
    return out


def live_context(conn: Connection, user_pk: int | None, context: Mapping[str, Any],
                 base: str | None = None) -> dict[str, Any] | None:
    """The grant's context with the links in force now, or None when the grant no longer holds
    (the login is gone or inactive, its role changed, or the patient in context is no longer one
    it acts for). Client grants (no user) are returned unchanged."""
    ctx = dict(context)
    if user_pk is None:
        return ctx
    user = user_on(conn, user_pk)
    if user is None or not user["active"]:
        return None
    role = ctx.get("role") or user["role"]
    if role != user["role"]:
        return None
    if role in ("patient", "guardian"):
        live = set(live_patients(conn, user, base))
        granted = [str(p) for p in ctx.get("patients") or []]
        patients = [p for p in granted if p in live]
        if ctx.get("patient") and ctx["patient"] not in live:
            return None
        if granted and not patients:
            return None
        ctx["patients"] = patients
    else:
        ctx["patients"] = _kept(ctx.get("patients"), user["patients"])
        ctx["organizations"] = _kept(ctx.get("organizations"), user["organizations"])
        if ctx.get("organizations") is not None and context.get("organizations") and not ctx["organizations"]:
            return None
    return ctx


def _kept(granted: Iterable[str] | None, live: Iterable[str]) -> list[str]:
    alive = {str(x) for x in live}
    return [str(x) for x in granted or [] if str(x) in alive]


__all__ = ["guardian_links", "live_context", "live_patients"]
