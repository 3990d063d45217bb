"""Rendering, language, the signed flash banner and the guard every portal page goes through."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from flask import Response, abort, g, redirect, request, url_for

from fhirserver.operations import concept_text, human_name
from portal import core, webparts
from portal.clinic import Clinic, clinic_of, format_money, format_when, invoice_number, status_text
from portal.i18n import LANGS, translate

PUBLIC = {"portal.login", "portal.forgot", "portal.reset", "portal.share", "portal.static", "portal.dev_mail",
          "portal.lang", "portal.logo"}


def lang() -> str:
    """The patient's preferred language in their record, else the cookie's, else the browser's."""
    if getattr(g, "lang", None):
        return g.lang
    choice = None
    if g.get("patient_res"):
        for c in g.patient_res.get("communication") or []:
            code = ((c.get("language") or {}).get("coding") or [{}])[0].get("code", "")[:2]
            if code in LANGS and (c.get("preferred") or choice is None):
                choice = code
    return webparts.settle_lang(choice or request.cookies.get(core.LANG_COOKIE))


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
    return webparts.render(core.SITE, template, status, _=_, lang=lang(), user=g.get("user"),
                           patient_id=g.get("patient"), patient_res=g.get("patient_res"),
                           children=g.get("children") or [], name=human_name, concept=concept_text,
                           dev=bool(getattr(core.services().settings, "dev_mode", False)), clinic=clinic(),
                           when=when, money=money, status_text=status_word, invoice_number=invoice_number,
                           **kw)


def back(endpoint: str, msg: str | None = None, **kw: Any) -> Response:
    """Redirect (303) to a page that shows `msg` once, carried in a signed cookie."""
    return webparts.back(core.SITE, endpoint, msg, **kw)


def before() -> Response | None:
    core.ensure_client()
    core.load_session()
    g.patient_res, g.children = None, []
    if g.user is not None and g.patient:
        f = core.Fhir(g.policy)
        g.patient_res = f.read("Patient", g.patient)
        if g.user["role"] == "guardian":
            names = core.guardian_fhir()  # every child the guardian acts for now
            g.children = [(pid, human_name(names.read("Patient", pid)) or pid) for pid in g.patients]
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


def download(data: bytes, mime: str, filename: str, inline: bool = False) -> Response:
    resp = Response(data, mimetype=mime)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    resp.headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{safe}"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
