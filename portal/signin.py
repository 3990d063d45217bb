"""Signing in and out, password reset and change, the language and the patient acted for."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, redirect, request, url_for
from sqlalchemy import select, update

from portal import core, webparts
from portal.i18n import LANGS
from portal.web import _, back, clinic, page


def login() -> Response:
    from smart_auth import LoginError, check_login, new_session

    if request.method == "GET":
        return page("login.html", next=request.args.get("next", ""))
    form = request.form
    username = form.get("username", "").strip().lower()
    if not core.csrf_ok():
        return page("login.html", 400, form=form, errors={"form": _("The form expired; try again.")})
    errors = {}
    if not username:
        errors["username"] = _("Enter your email address.")
    if errors:
        return page("login.html", 400, form=form, errors=errors)
    try:
        user = check_login(core.engine(), username, form.get("password", ""))
    except LoginError as exc:
        return page("login.html", 401, form=form, errors={"form": _login_error(str(exc))})
    sid, _csrf = new_session(core.engine(), user["pk"])
    nxt = form.get("next") or ""
    resp = redirect(nxt if nxt.startswith("/portal/") and "//" not in nxt else url_for("portal.home"), 303)
    resp.set_cookie(core.SESSION_COOKIE, sid, httponly=True, samesite="Lax", path="/portal",
                    secure=request.scheme == "https")
    from smart_auth import must_change_password

    if must_change_password(core.engine(), user["pk"]):
        resp.headers["Location"] = url_for("portal.password")
    return resp


def logout() -> Response:
    return webparts.sign_out(core.SITE, "portal.login", core.PATIENT_COOKIE)


def _reset_serializer() -> Any:
    from itsdangerous import URLSafeTimedSerializer

    from smart_auth import server_secret

    return URLSafeTimedSerializer(server_secret(core.engine(), "portal-reset"), salt="portal-reset")


def forgot() -> Response:
    from fhirserver.notify import send_email
    from fhirserver.access import lifecycle_account as acct
    from smart_auth import user_named

    if request.method == "GET":
        return page("forgot.html")
    form = request.form
    email = form.get("email", "").strip().lower()
    if not core.csrf_ok():
        return page("forgot.html", 400, form=form, errors={"form": _("The form expired; try again.")})
    if not email or "@" not in email:
        return page("forgot.html", 400, form=form, errors={"email": _("Enter your email address.")})
    serializer = _reset_serializer()
    with core.engine().connect() as conn:
        user = user_named(conn, email)
        answer = conn.execute(select(acct.c.security_answer_hash).where(
            acct.c.user_pk == user["pk"])).scalar() if user else None
    row = (user["pk"], user["password_hash"]) if user else None
    if row is not None and answer:
        with core.engine().begin() as conn:
            tok = serializer.dumps({"u": row[0], "h": (row[1] or "")[-12:]})
            link = f"{core.services().root_url()}/portal/reset?token={tok}"
            send_email(conn, core.services().settings.smtp_url, email, "Reset your password",
                       f"Someone asked to reset the password of your health records account.\n\n"
                       f"Open this link within one hour and answer your security question:\n{link}\n\n"
                       "If it was not you, ignore this email.\n")
    return page("message.html", title=_("Reset your password"),
                text=_("If an account uses this address, we sent it a link to reset the password."))


def reset() -> Response:
    from itsdangerous import BadSignature

    from fhirserver.access import lifecycle_account as acct
    from smart_auth import set_password, user_on, verify_hash

    token = request.values.get("token", "")
    try:
        data = _reset_serializer().loads(token, max_age=3600)
    except BadSignature:
        data = None
    row = None
    if data:
        with core.engine().connect() as conn:
            user = user_on(conn, int(data["u"])) if isinstance(data.get("u"), int) else None
            sec = conn.execute(select(acct.c.security_question, acct.c.security_answer_hash).where(
                acct.c.user_pk == user["pk"])).first() if user else None
        row = (user["pk"], user["password_hash"], sec[0], sec[1]) if user and sec else None
    if row is None or (row[1] or "")[-12:] != data.get("h"):
        return page("message.html", 410, title=_("Reset your password"), text=_("This link is not valid or has expired."))
    if request.method == "GET":
        return page("reset.html", token=token, question=row[2])
    form, errors = request.form, {}
    if not core.csrf_ok():
        errors["form"] = _("The form expired; try again.")
    elif not verify_hash(row[3], form.get("answer", "").strip().lower()):
        errors["answer"] = _("The security answer is not right.")
    elif len(form.get("new_password", "")) < 8:
        errors["new_password"] = _("Choose a new password of 8 characters or more, different from the current one.")
    if errors:
        return page("reset.html", 400, token=token, question=row[2], form=form, errors=errors)
    with core.engine().begin() as conn:
        set_password(conn, row[0], form["new_password"], unlock=True)
    return back("portal.login", _("Your password was reset; sign in."))


def password() -> Response:
    from fhirserver.access import lifecycle_account as acct
    from smart_auth import LoginError, check_login, set_password

    if request.method == "GET":
        return page("password.html")
    form, errors = request.form, {}
    try:
        check_login(core.engine(), g.user["username"], form.get("password", ""))
    except LoginError as exc:
        errors["password"] = _(str(exc))
    new = form.get("new_password", "")
    if not errors and (len(new) < 8 or new == form.get("password")):
        errors["new_password"] = _("Choose a new password of 8 characters or more, different from the current one.")
    if errors:
        return page("password.html", 400, form=form, errors=errors)
    with core.engine().begin() as conn:
        set_password(conn, g.user["pk"], new)
        conn.execute(update(acct).where(acct.c.user_pk == g.user["pk"]).values(must_change_password=False))
    return back("portal.profile", _("Your password was changed."))


def set_lang() -> Response:
    choice = request.form.get("lang", "en")
    choice = choice if choice in LANGS else "en"
    if g.get("user") is not None and g.get("patient_res") and g.user["role"] == "patient" and core.csrf_ok():
        save_language(choice)
    nxt = request.form.get("next") or url_for("portal.home")
    resp = redirect(nxt if nxt.startswith("/portal") else url_for("portal.home"), 303)
    resp.set_cookie(core.LANG_COOKIE, choice, samesite="Lax", path="/portal", max_age=365 * 86400)
    return resp


def save_language(choice: str) -> None:
    body = dict(g.patient_res)
    body["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": choice}],
                                           "text": "Español" if choice == "es" else "English"},
                              "preferred": True}]
    g.patient_res = core.user_fhir().update("Patient", body["id"], body)
    g.lang = choice


def switch() -> Response:
    who = request.form.get("patient", "")
    resp = back("portal.home")
    if who in (g.patients or []):
        resp.set_cookie(core.PATIENT_COOKIE, who, httponly=True, samesite="Lax", path="/portal")
    return resp


def _login_error(msg: str) -> str:
    return _(msg)


def logo() -> Response:
    """The clinic's logo (Settings.clinic_logo), public: the sign-in and OAuth pages show it."""
    found = clinic().logo_file()
    if found is None:
        abort(404)
    resp = Response(found[0], mimetype=found[1])
    resp.headers["Cache-Control"] = "public, max-age=3600"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return resp


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/login', login, ['GET', 'POST']),
        ('/logout', logout, ['POST']),
        ('/forgot', forgot, ['GET', 'POST']),
        ('/reset', reset, ['GET', 'POST']),
        ('/password', password, ['GET', 'POST']),
        ('/lang', set_lang, ['POST']),
        ('/switch', switch, ['POST']),
        ('/logo', logo, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
