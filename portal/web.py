"""Rendering, language, the signed flash banner and the guard every portal page goes through."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from flask import Response, abort, g, make_response, redirect, render_template, request, url_for

from fhirserver.operations import render as rnd
from portal import core
from portal.clinic import Clinic, clinic_of, format_money, format_when, invoice_number, status_text
from portal.i18n import LANGS, translate

PUBLIC = {"portal.login", "portal.forgot", "portal.reset", "portal.share", "portal.static", "portal.dev_mail",
          "portal.lang", "portal.logo"}


def lang() -> str:
    if getattr(g, "lang", None):
        return g.lang
    choice = None
    if g.get("patient_res"):
        for c in g.patient_res.get("communication") or []:
            code = ((c.get("language") or {}).get("coding") or [{}])[0].get("code", "")[:2]
            if code in LANGS and (c.get("preferred") or choice is None):
                choice = code
    choice = choice or request.cookies.get(core.LANG_COOKIE)
    if choice not in LANGS:
        choice = request.accept_languages.best_match(LANGS) or "en"
    g.lang = choice
    return choice


def _(text: str, **kw: Any) -> str:
    return translate(lang(), text, **kw)


def clinic() -> Clinic:
    return clinic_of(core.services().settings)


def when(value: str | None, date_only: bool = False) -> str:
    """A time as the patient reads it: in the clinic's time zone and the page's language."""
    return format_when(value, lang(), clinic().zone, date_only)


def money(amount: dict[str, Any] | None) -> str:
    return format_money(amount, lang())


def status_word(code: str | None) -> str:
    return status_text(code, lang())


def page(template: str, status: int = 200, **kw: Any) -> Response:
    anon_csrf = None
    if g.get("session") is None:
        anon_csrf = request.cookies.get(core.ANON_CSRF_COOKIE) or core.new_csrf()
    kw.setdefault("form", {})
    kw.setdefault("errors", {})
    html = render_template(template, _=_, lang=lang(), user=g.get("user"), patient_id=g.get("patient"),
                           patient_res=g.get("patient_res"), children=g.get("children") or [],
                           csrf=(g.session["csrf"] if g.get("session") else anon_csrf),
                           name=rnd.human_name, concept=rnd.concept_text, flash=_take_flash(),
                           dev=bool(getattr(core.services().settings, "dev_mode", False)), clinic=clinic(),
                           when=when, money=money, status_text=status_word, invoice_number=invoice_number,
                           **kw)
    resp = make_response(html, status)
    if request.cookies.get(FLASH_COOKIE):
        resp.delete_cookie(FLASH_COOKIE, path="/portal")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    if anon_csrf:
        resp.set_cookie(core.ANON_CSRF_COOKIE, anon_csrf, httponly=True, samesite="Lax", path="/portal")
    return resp


FLASH_COOKIE = "fs_portal_flash"


FLASH_SECONDS = 300


def _flash_serializer() -> Any:
    from itsdangerous import URLSafeTimedSerializer

    from smart_auth import store

    return URLSafeTimedSerializer(store.server_secret(core.engine(), "portal-flash"), salt="portal-flash")


def _take_flash() -> str | None:
    """The banner of the page after a redirect: a message the server signed, never query text
    (a link with `?m=...` must not make the portal say anything)."""
    from itsdangerous import BadSignature

    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        msg = _flash_serializer().loads(raw, max_age=FLASH_SECONDS)
    except BadSignature:
        return None
    return msg if isinstance(msg, str) else None


def back(endpoint: str, msg: str | None = None, **kw: Any) -> Response:
    """Redirect (303) to a page that shows `msg` once, carried in a signed cookie."""
    resp = redirect(url_for(endpoint, **kw), 303)
    if msg:
        resp.set_cookie(FLASH_COOKIE, _flash_serializer().dumps(msg), max_age=FLASH_SECONDS, httponly=True,
                        samesite="Lax", path="/portal", secure=request.scheme == "https")
    return resp


def before() -> Response | None:
    core.ensure_client()
    core.load_session()
    g.patient_res, g.children = None, []
    if g.user is not None and g.patient:
        f = core.Fhir(g.policy)
        g.patient_res = f.read("Patient", g.patient)
        if g.user["role"] == "guardian":
            names = core.guardian_fhir()  # every child the guardian acts for now
            g.children = [(pid, rnd.human_name(names.read("Patient", pid)) or pid) for pid in g.patients]
    if request.endpoint in PUBLIC:
        return None
    if g.user is None:
        return redirect(url_for("portal.login", next=request.path), 303)
    if request.method == "POST" and not core.csrf_ok():
        return page("message.html", 400, title=_("The form expired; try again."), text="")
    return None


def ref_id(value: Any, res_type: str) -> str | None:
    """The id of a local reference to `res_type` (the one reference parser), else None."""
    from fhirserver.model import reference_id

    return reference_id(value, res_type, core.services().fhir_base())


def pid() -> str:
    if not g.patient:
        abort(403)
    return g.patient


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_when(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def download(data: bytes, mime: str, filename: str, inline: bool = False) -> Response:
    resp = Response(data, mimetype=mime)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    resp.headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{safe}"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
