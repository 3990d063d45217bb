"""The profile (mobile, security question, language, photo) and the development outbox."""
from __future__ import annotations

import base64
import re
from typing import Any

from flask import Blueprint, Response, abort, g, request
from sqlalchemy import select, update

from portal import core
from portal.i18n import LANGS
from portal.signin import save_language
from portal.web import _, back, lang, page


MOBILE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{6,19}$")


def _account() -> dict[str, Any]:
    from fhirserver.access import lifecycle_account as acct

    with core.engine().connect() as conn:
        row = conn.execute(select(acct).where(acct.c.user_pk == g.user["pk"])).mappings().first()
    return dict(row) if row else {}


def profile() -> Response:
    from fhirserver.access import lifecycle_account as acct
    from smart_auth import hash_password

    account = _account()
    if request.method == "GET":
        return page("profile.html", account=account,
                    form={"mobile": account.get("mobile") or "", "question": account.get("security_question") or "",
                          "lang": lang()})
    form, errors = request.form, {}
    mobile = form.get("mobile", "").strip()
    if mobile and not MOBILE_RE.match(mobile):
        errors["mobile"] = _("Enter a valid mobile number (digits, optionally starting with +).")
    photo = request.files.get("photo")
    pdata = photo.read(1024 * 1024 + 1) if photo and photo.filename else b""
    if photo and photo.filename and (photo.mimetype not in ("image/jpeg", "image/png") or len(pdata) > 1024 * 1024):
        errors["photo"] = _("The photo must be a JPEG or PNG image of at most 1 MB.")
    if errors:
        return page("profile.html", 400, account=account, form=form, errors=errors)
    values: dict[str, Any] = {}
    if mobile:
        values["mobile"] = mobile
    if form.get("question", "").strip() and form.get("answer", "").strip():
        values["security_question"] = form["question"].strip()[:300]
        values["security_answer_hash"] = hash_password(form["answer"].strip().lower())
    if values and account:
        with core.engine().begin() as conn:
            conn.execute(update(acct).where(acct.c.user_pk == g.user["pk"]).values(**values))
    if g.patient_res and g.user["role"] == "patient":
        if form.get("lang") in LANGS:
            save_language(form["lang"])
        if pdata:
            body = {**g.patient_res, "photo": [{"contentType": photo.mimetype,
                                               "data": base64.b64encode(pdata).decode()}]}
            g.patient_res = core.user_fhir().update("Patient", body["id"], body)
    resp = back("portal.profile", _("Your profile was saved."))
    if form.get("lang") in LANGS:
        resp.set_cookie(core.LANG_COOKIE, form["lang"], samesite="Lax", path="/portal", max_age=365 * 86400)
    return resp


def photo() -> Response:
    ph = ((g.patient_res or {}).get("photo") or [{}])[0]
    if not ph.get("data"):
        abort(404)
    return Response(base64.b64decode(ph["data"]), mimetype=ph.get("contentType", "image/png"))


def dev_mail() -> Response:
    if not getattr(core.services().settings, "dev_mode", False):
        abort(404)
    from fhirserver.notify import outbox

    return page("mail.html", mails=outbox(core.engine(), 50))


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/profile', profile, ['GET', 'POST']),
        ('/photo', photo, ['GET']),
        ('/dev/mail', dev_mail, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
