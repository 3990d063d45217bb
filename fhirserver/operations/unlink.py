"""`Patient/[id]/$unlink` (staff remove a patient from their organization), `$close` (the patient
closes their account), `$reactivate` (staff or admin bring a closed/unlinked profile back).

The email of an unlinked, closed or deleted profile stays reserved: a new profile with it is
refused (409) until the account is reactivated.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from fhirserver.access import check_reactivate, lifecycle_account, lifecycle_email
from fhirserver.interactions import FhirResponse, check_id
from fhirserver.errors import FhirError
from fhirserver.operations import _common as c
from fhirserver.storage import idx_reference, resource


def _reserve_all(conn, body: dict, pid: str, status: str) -> None:  # noqa: ANN001
    from sqlalchemy import insert

    for email in c.emails_of(body):
        row = conn.execute(select(lifecycle_email).where(lifecycle_email.c.email == email)).mappings().first()
        if row is None:
            conn.execute(insert(lifecycle_email).values(email=email, res_type="Patient", res_id=pid, status=status))
        elif row["res_type"] == "Patient" and row["res_id"] == pid:
            conn.execute(update(lifecycle_email).where(lifecycle_email.c.email == email).values(status=status))


def _owned(conn, pid: str) -> dict | None:  # noqa: ANN001
    row = conn.execute(select(lifecycle_account).where(lifecycle_account.c.res_type == "Patient",
                                                       lifecycle_account.c.res_id == pid)).mappings().first()
    return dict(row) if row else None


def unlink(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    p = c.principal(ctx)
    pid = req.res_id
    body = c.visible(ctx, tx, "Patient", pid)
    orgs = set(p.organizations) if p is not None else set()
    # consents that share the patient with the unlinking organization end too (read while the
    # patient is still on the organization's list, through the caller's row filter)
    tx.flush()
    consents = tx.conn.execute(select(resource.c.res_id, resource.c.body).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False), *ctx.access.row_filter("Consent"),
        resource.c.pk.in_(select(idx_reference.c.res_pk).where(
            idx_reference.c.res_type == "Consent", idx_reference.c.param == "patient",
            idx_reference.c.target_type == "Patient", idx_reference.c.target_id == pid)))).all()
    org = c.ref_id(body.get("managingOrganization"), "Organization", ctx.base)
    changed = False
    if org and (p is None or p.role == "admin" or org in orgs):
        body = {k: v for k, v in body.items() if k != "managingOrganization"}
        tx.update("Patient", pid, body)
        changed = True
    for cid, text in consents:
        consent = json.loads(text)
        actors = {c.ref_id(a.get("reference"), "Organization", ctx.base) for a in (consent.get("provision") or {}).get("actor") or []}
        if consent.get("status") == "active" and actors & orgs:
            tx.update("Consent", cid, {**consent, "status": "inactive"})
            changed = True
    if not changed:
        raise FhirError(422, "This patient is not on your organization's list", "processing")
    _reserve_all(tx.conn, body, pid, "owned" if (_owned(tx.conn, pid) or {}).get("status") == "active" else "unlinked")
    c.audit(tx, ctx, "U", [f"Patient/{pid}"], "unlink", "removed from the organization")
    return FhirResponse(200, c.parameters(("result", True), ("message", f"Patient/{pid} was removed from your list")))


def close(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    pid = req.res_id
    body = c.visible(ctx, tx, "Patient", pid)
    p = c.principal(ctx)
    if p is not None and p.role not in ("admin",) and not (p.role == "patient" and pid in p.patients):
        raise FhirError(403, "Only the patient closes their own account", "forbidden")
    acct = _owned(tx.conn, pid)
    tx.update("Patient", pid, {**body, "active": False})
    directory = c.port(ctx, "logins")
    # every login of this patient ends: the invited account, and a login made by hand for it
    logins = set(directory.of_profile(tx.conn, f"Patient/{pid}", role="patient"))
    if acct:
        logins.add(acct["user_pk"])
        tx.conn.execute(update(lifecycle_account).where(lifecycle_account.c.user_pk == acct["user_pk"])
                        .values(status="closed"))
    for user_pk in sorted(logins):
        directory.change(tx, user_pk, active=False)  # which also ends its tokens
    _reserve_all(tx.conn, body, pid, "closed")
    c.audit(tx, ctx, "U", [f"Patient/{pid}"], "close", "account closed")
    return FhirResponse(200, c.parameters(("result", True), ("message", "The account is closed")))


def reactivate(ctx, tx, req) -> FhirResponse:  # noqa: ANN001

    p = c.principal(ctx)
    pid = check_id(req.res_id)
    # an unlinked profile is invisible to the organization that had it: the access rule looks
    # at its history instead of the row filter (and answers before anything says it exists)
    check_reactivate(tx, p, pid, ctx.base)
    cur = tx.current("Patient", pid)
    if cur is None or cur.deleted or cur.body is None:
        raise FhirError(404, f"Patient/{pid} is not known", "not-found")
    body = json.loads(cur.body)
    new = {**body, "active": True}
    if p is not None and p.role != "admin":
        if "managingOrganization" not in new:
            new["managingOrganization"] = {"reference": f"Organization/{p.organizations[0]}"}
    ctx.access.check_write("Patient", {**new, "id": pid})
    tx.update("Patient", pid, new)
    acct = _owned(tx.conn, pid)
    if acct:
        status = "active" if acct["activated"] else "invited"
        tx.conn.execute(update(lifecycle_account).where(lifecycle_account.c.user_pk == acct["user_pk"])
                        .values(status=status))
        c.port(ctx, "logins").change(tx, acct["user_pk"], active=bool(acct["activated"]))
        for email in c.emails_of(body):
            tx.conn.execute(update(lifecycle_email).where(lifecycle_email.c.email == email,
                                                          lifecycle_email.c.res_id == pid).values(status="owned"))
    else:
        for email in c.emails_of(body):
            tx.conn.execute(lifecycle_email.delete().where(lifecycle_email.c.email == email,
                                                           lifecycle_email.c.res_id == pid))
    c.audit(tx, ctx, "U", [f"Patient/{pid}"], "reactivate", "account reactivated")
    return FhirResponse(200, c.parameters(("result", True), ("message", f"Patient/{pid} is active again")))
