"""Signing in and out, the language choice, and the guard every console request passes."""
from __future__ import annotations

from flask import Blueprint, Response, g, redirect, request, url_for

from console import core
from portal import sign_out
from console.core import _, page

PUBLIC = {"console.login", "console.static", "console.set_lang"}


def before() -> Response | None:
    core.load_session()
    if request.endpoint in PUBLIC:
        return None
    if g.user is None:
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")), 303)
    if request.method == "POST" and not core.csrf_ok():
        return page("message.html", 400, title=_("The form expired; try again."), text="")
    return None


def _safe_next(nxt: str) -> str:
    return nxt if nxt.startswith("/console/") and "//" not in nxt and "\\" not in nxt else url_for("console.patients.index")


def login() -> Response:
    """The server's user store checks the password (with its lockout); only staff logins pass."""
    from smart_auth import SESSION_SECONDS, LoginError, blocked_for, check_login, new_session, record_failure

    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("console.patients.index"), 303)
        return page("login.html", next=request.args.get("next", ""))
    form = request.form
    if not core.csrf_ok():
        return page("login.html", 400, form=form, errors={"form": _("The form expired; try again.")})
    wait = blocked_for(core.engine(), request.remote_addr)
    if wait:
        return page("login.html", 429, form=form,
                    errors={"form": _("Too many failed attempts: the account is locked for a while")})
    username = form.get("username", "").strip().lower()
    if not username:
        return page("login.html", 400, form=form, errors={"username": _("Enter your email address.")})
    try:
        user = check_login(core.engine(), username, form.get("password", ""))
    except LoginError as exc:
        record_failure(core.engine(), request.remote_addr, "login")
        return page("login.html", 401, form=form, errors={"form": _(str(exc))})
    if user["role"] not in core.STAFF_ROLES:
        return page("login.html", 403, form=form, errors={"form": _("This login is not a staff login.")})
    sid, _csrf = new_session(core.engine(), user["pk"])
    resp = redirect(_safe_next(form.get("next") or ""), 303)
    resp.set_cookie(core.SESSION_COOKIE, sid, httponly=True, samesite="Lax", path=core.PATH,
                    secure=request.scheme == "https", max_age=SESSION_SECONDS)
    return resp


def logout() -> Response:
    return sign_out(core.SITE, "console.login")


def set_lang() -> Response:
    choice = request.form.get("lang", "en")
    resp = redirect(_safe_next(request.form.get("next", "")), 303)
    if choice in core.LANGS:
        resp.set_cookie(core.LANG_COOKIE, choice, samesite="Lax", path=core.PATH, max_age=365 * 86400)
    return resp


def home() -> Response:
    return redirect(url_for("console.patients.index"), 303)


def not_found(_exc: Exception) -> Response:
    """Missing and not-yours look the same: nothing says whether it exists elsewhere."""
    return page("message.html", 404, title=_("Not found or not yours to see."), text="")


def register(bp: Blueprint) -> None:
    bp.before_request(before)
    bp.register_error_handler(404, not_found)
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    bp.add_url_rule("/lang", "set_lang", set_lang, methods=["POST"])
    bp.add_url_rule("/", "home", home, methods=["GET"])
