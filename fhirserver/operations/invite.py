"""`$invite` on Patient/[id] and RelatedPerson/[id]: give the patient (or guardian) a login.

The staff member confirms with their own password (`password`); the profile needs a valid email
(422 otherwise), and for a Patient a first and last name. The email becomes the username and is
reserved for this profile (409 when another profile owns it). A single-use activation link
(expiring after `invitation_seconds`) is emailed; inviting again supersedes older links. With
`temporary-password=true` the email carries a temporary password instead, which must be changed at
the first login.
"""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import insert, select, update

from fhirserver.interactions import FhirResponse
from fhirserver.errors import FhirError
from fhirserver.notify import send_email
from fhirserver.operations import _common as c
from fhirserver.access import lifecycle_account, lifecycle_email, lifecycle_invitation

INVITATION_SECONDS = 72 * 3600


def _confirm_password(ctx, tx, p, password) -> None:  # noqa: ANN001
    if p is None:  # no-auth mode: nobody to confirm
        return
    logins = c.port(ctx, "logins")
    if p.user_pk is None or logins.find(tx.conn, user_pk=p.user_pk) is None:
        raise FhirError(403, "Inviting needs a signed-in staff user who confirms with their password", "forbidden")
    if not logins.verify_password(tx.conn, p.user_pk, password):
        raise FhirError(403, "Password confirmation failed: confirm the invitation with your own password",
                        "security")


def _reserve(conn, email: str, res_type: str, res_id: str, status: str = "owned") -> None:  # noqa: ANN001
    row = conn.execute(select(lifecycle_email).where(lifecycle_email.c.email == email)).mappings().first()
    if row is None:
        conn.execute(insert(lifecycle_email).values(email=email, res_type=res_type, res_id=res_id, status=status))
    elif (row["res_type"], row["res_id"]) == (res_type, res_id) or (
            res_type == row["res_type"] == "RelatedPerson"):
        conn.execute(update(lifecycle_email).where(lifecycle_email.c.email == email).values(status=status))
    else:
        raise FhirError(409, f"The email address {email} already belongs to another profile on the platform; "
                        "request access to it instead", "duplicate")


def invite(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    res_type = req.res_type
    if res_type not in ("Patient", "RelatedPerson") or not req.res_id:
        raise FhirError(404, "$invite is an operation on Patient/[id] and RelatedPerson/[id]", "not-supported")
    p = c.principal(ctx)
    args = c.params(req)
    body = c.visible(ctx, tx, res_type, req.res_id)
    ctx.access.check_write(res_type, body)
    _confirm_password(ctx, tx, p, args.get("password"))
    if res_type == "Patient":
        names = body.get("name") or []
        if not any(n.get("given") for n in names) or not any(n.get("family") for n in names):
            raise FhirError(422, "A first name and a last name are required before inviting a patient", "required")
    email = c.check_email(args.get("email") or next(iter(c.emails_of(body)), None))
    if email not in c.emails_of(body):  # the invitation's email goes on the profile
        body = {**body, "telecom": [*(body.get("telecom") or []), {"system": "email", "value": email}]}
        ctx.access.check_write(res_type, body)
        tx.update(res_type, req.res_id, body)
    conn = tx.conn
    _reserve(conn, email, res_type, req.res_id)
    fhir_user = f"{res_type}/{req.res_id}"
    child = c.ref_id(body.get("patient"), "Patient", ctx.base) if res_type == "RelatedPerson" else None
    logins = c.port(ctx, "logins")
    user = logins.find(conn, username=email)
    temporary = c.truthy(args.get("temporary-password"))
    temp_pw = secrets.token_urlsafe(9) if temporary else None
    if user is None:
        role = "patient" if res_type == "Patient" else "guardian"
        patients = [req.res_id] if res_type == "Patient" else ([child] if child else [])
        user_pk = logins.create(conn, username=email, password=temp_pw or secrets.token_urlsafe(32), role=role,
                                fhir_user=fhir_user, patients=patients, active=temporary)
    else:
        same = user["fhir_user"] == fhir_user or (user["role"] == "guardian" and res_type == "RelatedPerson")
        if not same:
            raise FhirError(409, f"The email address {email} is the login of another account", "duplicate")
        user_pk = user["pk"]
        kids = user["patients"]
        logins.change(tx, user_pk,
                      patients=[*kids, child] if child and user["role"] == "guardian" and child not in kids else None,
                      password=temp_pw, active=True if temp_pw else None)
    acct = conn.execute(select(lifecycle_account).where(lifecycle_account.c.user_pk == user_pk)).mappings().first()
    if acct is None:
        conn.execute(insert(lifecycle_account).values(
            user_pk=user_pk, res_type=res_type, res_id=req.res_id, email=email,
            must_change_password=bool(temp_pw), activated=None, status="invited"))
    elif temp_pw:
        conn.execute(update(lifecycle_account).where(lifecycle_account.c.user_pk == user_pk)
                     .values(must_change_password=True))
    # resending invalidates every older link
    conn.execute(update(lifecycle_invitation).where(lifecycle_invitation.c.user_pk == user_pk,
                                                    lifecycle_invitation.c.used.is_(False))
                 .values(superseded=True))
    settings = c.services(ctx).settings
    ttl = getattr(settings, "invitation_seconds", INVITATION_SECONDS)
    patient_id = req.res_id if res_type == "Patient" else child
    clinic = getattr(settings, "clinic_name", "") or "A clinic"
    if temp_pw:
        subject = "Your access to your health records" + (f" at {settings.clinic_name}" if settings.clinic_name else "")
        text = (f"{clinic} created an account for you.\n\nUsername: {email}\nTemporary password: {temp_pw}\n\n"
                f"Sign in at {c.root_url(ctx)}/auth/password and choose your own password; the temporary "
                "password must be changed at the first sign-in.\n")
    else:
        token = secrets.token_urlsafe(32)
        conn.execute(insert(lifecycle_invitation).values(
            token_hash=hashlib.sha256(token.encode()).hexdigest(), res_type=res_type, res_id=req.res_id, email=email,
            user_pk=user_pk, invited_by=getattr(p, "fhir_user", None), created=c.now(),
            expires_at=c.now() + ttl, used=False, superseded=False))
        link = f"{c.root_url(ctx)}/auth/activate?token={token}"
        subject = "Activate your access to your health records" + (
            f" at {settings.clinic_name}" if settings.clinic_name else "")
        text = (f"{clinic} created a profile for you and invites you to access your records.\n\n"
                f"Validate your first access here (the link works once and expires in {ttl // 3600} hours):\n"
                f"{link}\n\nYou will choose a password, give a mobile number and a security answer.\n")
    send_email(conn, settings.smtp_url, email, subject, text, patient_id=patient_id)
    c.audit(tx, ctx, "E", [fhir_user], "invite", "invitation sent" + (" (temporary password)" if temp_pw else ""))
    return FhirResponse(200, c.parameters(("result", True), ("expires-in-seconds", 0 if temp_pw else ttl),
                                          ("message", f"Invitation sent to {email}")))
