"""`/auth/login` and `/auth/logout`: password sign-in (CSRF cookie, per-account lockout, per-address
rate limit, a temporary password changed first), then on to the consent page."""
from __future__ import annotations

import hmac

from flask import Response, make_response, render_template, request

from smart_auth import activation, ratelimit, store
from smart_auth.authz import check
from smart_auth.consent import consent_page
from smart_auth.session import (
    LOGIN_CSRF_COOKIE, SESSION_COOKIE, load_pending, login_page, secure_cookies,
)
from smart_auth.web import engine, error_page, rate_limited


def login() -> Response:
    limited = rate_limited("login")
    if limited is not None:
        return limited
    pending = request.form.get("pending", "")
    params = load_pending(pending)
    if params is None:
        return error_page("The sign-in request expired; start again from the application.")
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, request.form.get("csrf", "")):
        return error_page("The form expired (CSRF check failed); start again from the application.", 403)
    username = request.form.get("username", "").strip()
    try:
        user = store.check_login(engine(), username, request.form.get("password", ""))
    except store.LoginError as exc:
        ratelimit.record_failure(engine(), request.remote_addr, "login")
        return login_page(pending, str(exc), username, 401)
    if activation.must_change_password(engine(), user["pk"]):
        return activation.password_page("Your password is temporary: choose a new one, then sign in again.",
                                        username, 403)
    grant = check(params, user)
    if isinstance(grant, Response):
        return grant
    sid, csrf = store.new_session(engine(), user["pk"])
    resp = consent_page(grant, pending, user, {"csrf": csrf})
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax", secure=secure_cookies(), path="/auth",
                    max_age=store.SESSION_SECONDS)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/auth")
    return resp


def logout() -> Response:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        store.end_session(engine(), sid)
    resp = make_response(render_template("auth_error.html", message="You are signed out."))
    resp.delete_cookie(SESSION_COOKIE, path="/auth")
    return resp


__all__ = ["login", "logout"]
