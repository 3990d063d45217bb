"""The browser side of authorization: sign-in sessions, the signed pending authorization request
carried through the login and consent forms, and the login page."""
from __future__ import annotations

from typing import Any

from flask import Response, current_app, make_response, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from smart_auth import store
from smart_auth.web import engine, root_url

SESSION_COOKIE = "fs_auth_session"
LOGIN_CSRF_COOKIE = "fs_login_csrf"
PENDING_SECONDS = 1800


def _serializer() -> URLSafeTimedSerializer:
    ext = current_app.extensions.setdefault("smart_auth", {})
    if "serializer" not in ext:
        ext["serializer"] = URLSafeTimedSerializer(store.server_secret(engine()), salt="smart-authorize")
    return ext["serializer"]


def dump_pending(params: dict[str, str]) -> str:
    """The authorization request's parameters, signed: the forms cannot alter them."""
    return _serializer().dumps(params)


def load_pending(raw: str) -> dict[str, str] | None:
    try:
        params = _serializer().loads(raw, max_age=PENDING_SECONDS)
    except BadSignature:
        return None
    return params if isinstance(params, dict) else None


def current_user() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The signed-in, active user and their session, or (None, None)."""
    sess = store.get_session(engine(), request.cookies.get(SESSION_COOKIE))
    if sess is None:
        return None, None
    user = store.get_user(engine(), sess["user_pk"])
    if user is None or not user["active"]:
        return None, None
    return user, sess


def secure_cookies() -> bool:
    return request.is_secure or root_url().startswith("https://")


def login_page(pending: str, error: str | None = None, username: str = "", status: int = 200) -> Response:
    token = store.new_token(16)
    resp = make_response(render_template("auth_login.html", pending=pending, csrf=token, error=error,
                                         username=username), status)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Lax", secure=secure_cookies(),
                    path="/auth")
    resp.headers["Cache-Control"] = "no-store"
    return resp


__all__ = ["LOGIN_CSRF_COOKIE", "SESSION_COOKIE", "current_user", "dump_pending", "load_pending", "login_page",
           "secure_cookies"]
