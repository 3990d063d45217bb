"""Rules of a profile's life that decide who may delete or bring it back.

A Patient profile whose patient activated an account belongs to that patient: staff cannot delete
it (they remove it from their organization with `$unlink`), only the patient or an admin can. A
deleted profile keeps its emails reserved, so that nobody else takes over the identity by
creating a new profile with them.

`check_delete` runs inside the delete's own transaction (REST, Bundle entries, conditional
deletes, `$erase`): a refusal writes nothing, and the reservation is rolled back with a delete
that fails later.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from fhirserver.access.tables import lifecycle_account as acct, lifecycle_email as em
from fhirserver.errors import FhirError
from fhirserver.model import reference_id

OWNED_STATUSES = ("active", "closed")  # the patient activated the account (closed ones can come back)


def _forbidden(msg: str) -> Exception:
    return FhirError(403, msg, "forbidden")


def owned_by_account(conn: Any, res_type: str, res_id: str) -> bool:
    """Whether the profile is owned by an account its person activated."""
    return conn.execute(select(acct.c.user_pk).where(
        acct.c.res_type == res_type, acct.c.res_id == res_id,
        acct.c.status.in_(OWNED_STATUSES))).first() is not None


def is_owner(principal: Any, res_type: str, res_id: str) -> bool:
    """The patient the profile belongs to, acting for themself."""
    if principal is None or res_type != "Patient" or principal.role != "patient":
        return False
    return res_id in principal.patients or principal.patient == res_id


def _emails(body: dict[str, Any]) -> list[str]:
    return [t["value"].strip().lower() for t in body.get("telecom") or []
            if t.get("system") == "email" and isinstance(t.get("value"), str) and t["value"].strip()]


def reserve_emails(conn: Any, body: dict[str, Any], res_type: str, res_id: str, status: str) -> None:
    """Keep the profile's emails from being used by a new profile (an email already reserved by
    someone keeps its owner)."""
    for email in _emails(body):
        if conn.execute(select(em.c.email).where(em.c.email == email)).first():
            continue
        try:
            with conn.begin_nested():
                conn.execute(insert(em).values(email=email, res_type=res_type, res_id=res_id, status=status))
        except IntegrityError:  # reserved concurrently: it stays reserved, which is all we want
            continue


def check_delete(tx: Any, principal: Any, res_type: str, res_id: str) -> None:
    """Refuse (403) staff, guardians and clients deleting a profile its patient owns; reserve the
    emails of a profile that is deleted. Writes only in `tx`."""
    if res_type != "Patient":
        return
    cur = tx.current(res_type, res_id)
    if cur is None or cur.deleted or cur.body is None:
        return
    if owned_by_account(tx.conn, res_type, res_id):
        if principal.role != "admin" and not is_owner(principal, res_type, res_id):
            raise _forbidden("This profile is owned by its patient (an activated account): it cannot be "
                             "deleted by staff, only removed from your organization with $unlink")
        return  # an owned profile's emails are reserved by its account already
    reserve_emails(tx.conn, json.loads(cur.body), res_type, res_id, "deleted")


def was_managed_by(tx: Any, res_type: str, res_id: str, organizations: Any, base: str | None = None) -> bool:
    """Whether the current or any earlier version of the profile named one of these organizations
    as its managing organization."""
    wanted = set(organizations)
    versions, _total = tx.history(res_type, res_id, count=1000, with_total=False)
    for v in versions:
        if v.body and reference_id(json.loads(v.body).get("managingOrganization"), "Organization", base) in wanted:
            return True
    return False


def check_reactivate(tx: Any, principal: Any, res_id: str, base: str | None = None) -> None:
    """Staff bring back an unlinked or closed profile only when it was once on one of their
    organizations' lists (an unlinked profile is no longer visible to them, so the row filter
    cannot decide); others ask the patient for access instead."""
    if principal is None or principal.role == "admin":
        return
    if principal.role != "staff" or not principal.organizations:
        raise _forbidden("Reactivating needs an organization")
    if not was_managed_by(tx, "Patient", res_id, principal.organizations, base):
        raise _forbidden("This patient was never on your organization's list: ask the patient for "
                         "access ($request-access) instead")


def check_answers_access(conn: Any, principal: Any, body: dict[str, Any], base: str | None = None) -> None:
    """Who answers a profile's access requests: the patient or their guardian; for a profile no
    account owns (never invited, or not yet activated), the staff of the organization that
    manages it, since nobody else controls it. Once the patient activates an account, the
    profile is theirs and only they decide who sees it."""
    pid = body.get("id")
    if principal is None or principal.role == "admin":
        return
    if principal.role in ("patient", "guardian"):
        if pid in set(principal.patients) | {principal.patient}:
            return
        raise _forbidden("Only the patient (or their guardian) may answer")
    if principal.role == "staff":
        org = reference_id(body.get("managingOrganization"), "Organization", base)
        if org is None or org not in principal.organizations:
            raise _forbidden("Only staff of the organization that manages this profile may answer")
        if owned_by_account(conn, "Patient", pid):
            raise _forbidden("The patient owns this profile: they answer access requests in their portal")
        return
    raise _forbidden("Only the patient (or their guardian) may answer")


__all__ = ["OWNED_STATUSES", "check_answers_access", "check_delete", "check_reactivate", "is_owner", "owned_by_account",
           "reserve_emails", "was_managed_by"]
