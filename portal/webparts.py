"""What every page of the portal and of the staff console does alike: the CSRF token, the language
fallback, the signed flash banner after a redirect, the security headers and signing out.

The two apps differ only in the path their cookies live under and the cookies' names (a `Site`),
so one piece serves both: a fix to the banner or the headers reaches both apps at once. The
console imports this module; it imports nothing of the console.
"""
from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from flask import Response, current_app, g, make_response, redirect, render_template, request, url_for

from itsdangerous import URLSafeTimedSerializer

from portal.i18n import LANGS
from smart_auth import end_session, server_secret

FLASH_SECONDS = 300
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclasses.dataclass(frozen=True)
class Site:
    """One web app's cookies: the path they live under and their names."""

    path: str
    session_cookie: str
    anon_csrf_cookie: str
    flash_cookie: str
    flash_purpose: str  # the server secret's name and the serializer's salt: one app's banner is not the other's


def services() -> Any:
    """The server's services, which both apps call FHIR and the user store through."""
    return current_app.extensions["fhirserver"]


def engine() -> Any:
    return services().repo.engine


def new_csrf() -> str:
    return secrets.token_urlsafe(16)


def csrf_ok(site: Site) -> bool:
    """The form's token is the session's, or before sign-in the one in the anonymous cookie."""
    sent = request.form.get("csrf", "")
    if g.get("session") is not None:
        return secrets.compare_digest(sent, g.session["csrf"])
    cookie = request.cookies.get(site.anon_csrf_cookie, "")
    return bool(cookie) and secrets.compare_digest(sent, cookie)


def settle_lang(choice: str | None) -> str:
    """The page's language: `choice` when it is one we speak, else the browser's best, else English."""
    if choice not in LANGS:
        choice = request.accept_languages.best_match(LANGS) or "en"
    g.lang = choice
    return choice


def _flash_serializer(site: Site) -> Any:
    return URLSafeTimedSerializer(server_secret(engine(), site.flash_purpose), salt=site.flash_purpose)


def take_flash(site: Site) -> str | None:
    """The banner of the page after a redirect: a message the server signed, never query text
    (a link with `?m=...` must not make the app say anything)."""
    from itsdangerous import BadSignature

    raw = request.cookies.get(site.flash_cookie)
    if not raw:
        return None
    try:
        msg = _flash_serializer(site).loads(raw, max_age=FLASH_SECONDS)
    except BadSignature:
        return None
    return msg if isinstance(msg, str) else None


def back(site: Site, endpoint: str, msg: str | None = None, **kw: Any) -> Response:
    """Redirect (303) to a page that shows `msg` once, carried in a signed cookie."""
    resp = redirect(url_for(endpoint, **kw), 303)
    if msg:
        resp.set_cookie(site.flash_cookie, _flash_serializer(site).dumps(msg), max_age=FLASH_SECONDS,
                        httponly=True, samesite="Lax", path=site.path, secure=request.scheme == "https")
    return resp


def render(site: Site, template: str, status: int, **context: Any) -> Response:
    """The page with its CSRF token and flash banner, never cached nor framed. Before sign-in the
    token lives in an anonymous cookie (the sign-in form posts it back)."""
    anon_csrf = None
    if g.get("session") is None:
        anon_csrf = request.cookies.get(site.anon_csrf_cookie) or new_csrf()
    context.setdefault("form", {})
    context.setdefault("errors", {})
    html = render_template(template, csrf=(g.session["csrf"] if g.get("session") else anon_csrf),
                           flash=take_flash(site), **context)
    resp = make_response(html, status)
    if request.cookies.get(site.flash_cookie):
        resp.delete_cookie(site.flash_cookie, path=site.path)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = CSP
    if anon_csrf:
        resp.set_cookie(site.anon_csrf_cookie, anon_csrf, httponly=True, samesite="Lax", path=site.path)
    return resp


def sign_out(site: Site, login_endpoint: str, *also_clear: str) -> Response:
    """End the session server-side (a copied cookie stops working too) and back to the sign-in page."""
    sid = request.cookies.get(site.session_cookie)
    if sid:
        end_session(engine(), sid)
    resp = redirect(url_for(login_endpoint), 303)
    for cookie in (site.session_cookie, *also_clear):
        resp.delete_cookie(cookie, path=site.path)
    return resp
