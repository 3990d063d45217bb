"""First access of invited patients and guardians, under /auth:

- `/auth/activate?token=...`: the link of the invitation email; the form sets the password, the
  mobile number and a security question and answer. The link works once, expires, and a newer
  invitation supersedes it.
- `/auth/password`: change a password (required at the first sign-in after a temporary password).
"""
from __future__ import annotations

import html
import re
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import select, update

from smart_auth import store
from smart_auth.tables import auth_user

MOBILE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{6,19}$")


def _engine() -> Any:
    return current_app.extensions["fhirserver"].repo.engine


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
           f"content='width=device-width'><title>{html.escape(title)}</title></head><body>"
           f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    resp = Response(doc, status=status, content_type="text/html; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _field(name: str, label: str, kind: str = "text", value: str = "") -> str:
    return (f"<p><label for={name}>{html.escape(label)}</label> <input id={name} name={name} type={kind} "
            f"value=\"{html.escape(value)}\" required></p>")


def _form(token: str, error: str | None = None, form: Any = None) -> Response:
    form = form or {}
    err = f"<p role=alert class=error>{html.escape(error)}</p>" if error else ""
    body = (f"{err}<form method=post action=activate><input type=hidden name=token value=\"{html.escape(token)}\">"
            + _field("password", "New password (8 characters or more)", "password")
            + _field("mobile", "Mobile number", "tel", form.get("mobile", ""))
            + _field("security_question", "Security question", "text", form.get("security_question", ""))
            + _field("security_answer", "Security answer", "password")
            + "<p><button type=submit>Register</button></p></form>")
    return _page("Validate your first access", body, 400 if error else 200)


def _invitation(conn: Any, token: str) -> dict[str, Any] | None:
    from fhirserver.access import lifecycle_invitation as inv

    row = conn.execute(select(inv).where(inv.c.token_hash == store.digest(token))).mappings().first()
    if row is None or row["used"] or row["superseded"] or row["expires_at"] <= store.now():
        return None
    return dict(row)


def activate() -> Response:
    from fhirserver.access import lifecycle_account as acct, lifecycle_invitation as inv

    token = (request.values.get("token") or "").strip()
    with _engine().connect() as conn:
        found = _invitation(conn, token) if token else None
    if found is None:
        return _page("Link not valid", "<p role=alert>This activation link was already used, has expired or "
                     "was replaced by a newer invitation. Ask your clinic to send a new one.</p>", 410)
    if request.method == "GET":
        return _form(token)
    f = request.form
    pw, mobile = f.get("password", ""), f.get("mobile", "").strip()
    question, answer = f.get("security_question", "").strip(), f.get("security_answer", "").strip()
    if len(pw) < 8:
        return _form(token, "The password needs at least 8 characters.", f)
    if not MOBILE_RE.match(mobile):
        return _form(token, "Enter a valid mobile number (digits, optionally starting with +).", f)
    if not question or not answer:
        return _form(token, "Choose a security question and give its answer.", f)
    with _engine().begin() as conn:
        n = conn.execute(update(inv).where(inv.c.pk == found["pk"], inv.c.used.is_(False),
                                           inv.c.superseded.is_(False)).values(used=True)).rowcount
        if n != 1:
            return _page("Link not valid", "<p role=alert>This activation link was already used.</p>", 410)
        conn.execute(update(auth_user).where(auth_user.c.pk == found["user_pk"]).values(
            password_hash=store.hash_password(pw), active=True, failed_logins=0, locked_until=0))
        conn.execute(update(acct).where(acct.c.user_pk == found["user_pk"]).values(
            mobile=mobile, security_question=question, security_answer_hash=store.hash_password(answer.lower()),
            must_change_password=False, activated=store.now(), status="active"))
        # all other links of this account stop working too
        conn.execute(update(inv).where(inv.c.user_pk == found["user_pk"], inv.c.used.is_(False))
                     .values(superseded=True))
    return _page("Your account is active", f"<p>You can now sign in with your email address "
                 f"({html.escape(found['email'])}) and your new password.</p>" + _portal_link())


def _portal_link() -> str:
    """A link to the patient portal's sign-in, when the portal is installed (a server may run without it)."""
    if "portal" not in current_app.blueprints:
        return ""
    from flask import url_for

    return f"<p><a href=\"{html.escape(url_for('portal.login'))}\">Sign in to the patient portal</a></p>"


def must_change_password(engine: Any, user_pk: int) -> bool:
    from fhirserver.access import lifecycle_account as acct

    with engine.connect() as conn:
        return bool(conn.execute(select(acct.c.must_change_password).where(acct.c.user_pk == user_pk)).scalar())


def password_page(error: str | None = None, username: str = "", status: int = 200) -> Response:
    err = f"<p role=alert class=error>{html.escape(error)}</p>" if error else ""
    body = (f"{err}<form method=post action=/auth/password>"
            + _field("username", "Email", "email", username) + _field("password", "Current password", "password")
            + _field("new_password", "New password (8 characters or more)", "password")
            + "<p><button type=submit>Change password</button></p></form>")
    return _page("Change your password", body, status)


def change_password() -> Response:
    from fhirserver.access import lifecycle_account as acct

    if request.method == "GET":
        return password_page()
    f = request.form
    username, new = f.get("username", "").strip().lower(), f.get("new_password", "")
    try:
        user = store.check_login(_engine(), username, f.get("password", ""))
    except store.LoginError as exc:
        return password_page(str(exc), username, 401)
    if len(new) < 8 or new == f.get("password", ""):
        return password_page("Choose a new password of 8 characters or more, different from the current one.",
                             username, 400)
    with _engine().begin() as conn:
        conn.execute(update(auth_user).where(auth_user.c.pk == user["pk"]).values(
            password_hash=store.hash_password(new)))
        conn.execute(update(acct).where(acct.c.user_pk == user["pk"]).values(
            must_change_password=False, activated=store.now(), status="active"))
    return _page("Password changed", "<p>Your password was changed; sign in again from your application.</p>")


def register(bp: Any) -> None:
    bp.add_url_rule("/activate", "activate", activate, methods=["GET", "POST"])
    bp.add_url_rule("/password", "password", change_password, methods=["GET", "POST"])
