"""The portal pages (server-rendered). Every FHIR access goes through `portal.core.Fhir` with the
signed-in user's SMART policy, clinic data (practitioners, organizations, slots, questionnaires)
included; booking's work on the clinic's Schedules and Slots runs as the named booking job, and a
share link renders with the policy of the user who made it."""
from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import (Blueprint, Response, abort, current_app, g, make_response, redirect, render_template,
                   request, url_for)
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhirserver.model.integers import parse_count
from fhirserver.errors import FhirError
from fhirserver.operations import render as rnd
from portal import core
from portal.i18n import LANGS, translate

MOBILE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{6,19}$")
ONLINE = ("urn:fhirserver:portal", "online-booking")
UPLOAD_TYPES = {"application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "text/plain": ".txt"}
PUBLIC = {"portal.login", "portal.forgot", "portal.reset", "portal.share", "portal.static", "portal.dev_mail",
          "portal.lang"}


class SlotTaken(Exception):
    pass


# -- language, rendering, guards ----------------------------------------------------------------
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
                           dev=bool(getattr(core.services().settings, "dev_mode", False)), **kw)
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


def _ref_id(value: Any, res_type: str) -> str | None:
    """The id of a local reference to `res_type` (the one reference parser), else None."""
    from fhirserver.model.references import reference_id

    return reference_id(value, res_type, core.services().fhir_base())


def pid() -> str:
    if not g.patient:
        abort(403)
    return g.patient


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _when(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _login_error(msg: str) -> str:
    return _(msg)


# -- access ------------------------------------------------------------------------------------
def login() -> Response:
    from smart_auth import store

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
        user = store.check_login(core.engine(), username, form.get("password", ""))
    except store.LoginError as exc:
        return page("login.html", 401, form=form, errors={"form": _login_error(str(exc))})
    sid, _csrf = store.new_session(core.engine(), user["pk"])
    nxt = form.get("next") or ""
    resp = redirect(nxt if nxt.startswith("/portal/") and "//" not in nxt else url_for("portal.home"), 303)
    resp.set_cookie(core.SESSION_COOKIE, sid, httponly=True, samesite="Lax", path="/portal",
                    secure=request.scheme == "https")
    from smart_auth.activation import must_change_password

    if must_change_password(core.engine(), user["pk"]):
        resp.headers["Location"] = url_for("portal.password")
    return resp


def logout() -> Response:
    from smart_auth import store

    sid = request.cookies.get(core.SESSION_COOKIE)
    if sid:
        store.end_session(core.engine(), sid)
    resp = redirect(url_for("portal.login"), 303)
    resp.delete_cookie(core.SESSION_COOKIE, path="/portal")
    resp.delete_cookie(core.PATIENT_COOKIE, path="/portal")
    return resp


def _reset_serializer() -> Any:
    from itsdangerous import URLSafeTimedSerializer

    from smart_auth import store

    return URLSafeTimedSerializer(store.server_secret(core.engine(), "portal-reset"), salt="portal-reset")


def forgot() -> Response:
    from fhirserver.notify import send_email
    from fhirserver.access.tables import lifecycle_account as acct
    from smart_auth.tables import auth_user

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
        row = conn.execute(select(auth_user.c.pk, auth_user.c.password_hash, acct.c.security_answer_hash)
                           .join(acct, acct.c.user_pk == auth_user.c.pk)
                           .where(auth_user.c.username == email)).first()
    if row is not None and row[2]:
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

    from fhirserver.access.tables import lifecycle_account as acct
    from smart_auth import store
    from smart_auth.tables import auth_user

    token = request.values.get("token", "")
    try:
        data = _reset_serializer().loads(token, max_age=3600)
    except BadSignature:
        data = None
    row = None
    if data:
        with core.engine().connect() as conn:
            row = conn.execute(select(auth_user.c.pk, auth_user.c.password_hash, acct.c.security_question,
                                      acct.c.security_answer_hash).join(acct, acct.c.user_pk == auth_user.c.pk)
                               .where(auth_user.c.pk == data["u"])).first()
    if row is None or (row[1] or "")[-12:] != data.get("h"):
        return page("message.html", 410, title=_("Reset your password"), text=_("This link is not valid or has expired."))
    if request.method == "GET":
        return page("reset.html", token=token, question=row[2])
    form, errors = request.form, {}
    if not core.csrf_ok():
        errors["form"] = _("The form expired; try again.")
    elif not store.verify_hash(row[3], form.get("answer", "").strip().lower()):
        errors["answer"] = _("The security answer is not right.")
    elif len(form.get("new_password", "")) < 8:
        errors["new_password"] = _("Choose a new password of 8 characters or more, different from the current one.")
    if errors:
        return page("reset.html", 400, token=token, question=row[2], form=form, errors=errors)
    with core.engine().begin() as conn:
        conn.execute(update(auth_user).where(auth_user.c.pk == row[0]).values(
            password_hash=store.hash_password(form["new_password"]), failed_logins=0, locked_until=0))
    return back("portal.login", _("Your password was reset; sign in."))


def password() -> Response:
    from fhirserver.access.tables import lifecycle_account as acct
    from smart_auth import store
    from smart_auth.tables import auth_user

    if request.method == "GET":
        return page("password.html")
    form, errors = request.form, {}
    try:
        store.check_login(core.engine(), g.user["username"], form.get("password", ""))
    except store.LoginError as exc:
        errors["password"] = _(str(exc))
    new = form.get("new_password", "")
    if not errors and (len(new) < 8 or new == form.get("password")):
        errors["new_password"] = _("Choose a new password of 8 characters or more, different from the current one.")
    if errors:
        return page("password.html", 400, form=form, errors=errors)
    with core.engine().begin() as conn:
        conn.execute(update(auth_user).where(auth_user.c.pk == g.user["pk"]).values(
            password_hash=store.hash_password(new)))
        conn.execute(update(acct).where(acct.c.user_pk == g.user["pk"]).values(must_change_password=False))
    return back("portal.profile", _("Your password was changed."))


def set_lang() -> Response:
    choice = request.form.get("lang", "en")
    choice = choice if choice in LANGS else "en"
    if g.get("user") is not None and g.get("patient_res") and g.user["role"] == "patient" and core.csrf_ok():
        _save_language(choice)
    nxt = request.form.get("next") or url_for("portal.home")
    resp = redirect(nxt if nxt.startswith("/portal") else url_for("portal.home"), 303)
    resp.set_cookie(core.LANG_COOKIE, choice, samesite="Lax", path="/portal", max_age=365 * 86400)
    return resp


def _save_language(choice: str) -> None:
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


# -- home, reports -------------------------------------------------------------------------------
def home() -> Response:
    f = core.user_fhir()
    p = pid() if g.patient else None
    appts = _appointments(f, p)[0] if p else []
    reports = f.search("DiagnosticReport", [("patient", p), ("_sort", "-date"), ("_count", "5")]) if p else []
    return page("home.html", upcoming=appts[:3], reports=reports)


def reports() -> Response:
    f = core.user_fhir()
    rows = f.search("DiagnosticReport", [("patient", pid()), ("_sort", "-date"), ("_count", "100")])
    return page("reports.html", reports=rows)


def _report_or_404(rid: str) -> dict[str, Any]:
    rep = core.user_fhir().read("DiagnosticReport", rid)
    if rep is None:
        abort(404)
    return rep


def report(rid: str) -> Response:
    rep = _report_or_404(rid)
    f = core.user_fhir()
    with f.repo.transaction() as tx:
        details = rnd.report_details(f.ctx, tx, rep)
    details["images"] = [{"comment": i["comment"], "src": f"data:{i['type']};base64,"
                          + base64.b64encode(i["data"]).decode()} for i in details["images"]]
    share = None
    if request.args.get("share"):
        share = rnd.share_url_for(core.services(), rid, g.patient, g.user["pk"])
    forms = [(i, x.get("title") or x.get("contentType")) for i, x in enumerate(rep.get("presentedForm") or [])]
    return page("report.html", rep=rep, d=details, share=share, forms=forms)


def report_pdf(rid: str) -> Response:
    rep = _report_or_404(rid)
    f = core.user_fhir()
    with f.repo.transaction() as tx:
        details = rnd.report_details(f.ctx, tx, rep)
    data = rnd.report_pdf(details, rnd.share_url_for(core.services(), rid, g.patient, g.user["pk"]), lang())
    return _download(data, "application/pdf", f"report-{rid}.pdf")


def report_form(rid: str, idx: int) -> Response:
    rep = _report_or_404(rid)
    forms = rep.get("presentedForm") or []
    if idx >= len(forms) or not forms[idx].get("data"):
        abort(404)
    att = forms[idx]
    return _download(base64.b64decode(att["data"]), att.get("contentType") or "application/octet-stream",
                     att.get("title") or f"report-{rid}")


def report_revoke(rid: str) -> Response:
    _report_or_404(rid)
    rnd.revoke_shares(core.engine(), rid)
    return back("portal.report", _("Share links of this report were revoked."), rid=rid)


def share(token: str) -> Response:
    data = rnd.check_share_token(core.engine(), token,
                                 getattr(core.services().settings, "share_link_seconds", rnd.SHARE_SECONDS))
    policy = core.sharer_policy(data.get("u"), data.get("p")) if data is not None else None
    if policy is None:  # expired, revoked, or its maker's account or access is gone
        return page("message.html", 410, title=_("Share link"), text=_("This link is not valid or has expired."))
    # everything the PDF shows is read as the user who shared it: what they could not see is not shown
    f = core.Fhir(policy, audit=False)
    with f.repo.transaction() as tx:
        rep = f.read("DiagnosticReport", str(data.get("r")), tx)
        if rep is None:
            return page("message.html", 410, title=_("Share link"),
                        text=_("This link is not valid or has expired."))
        details = rnd.report_details(f.ctx, tx, rep)
    core.services().audit.record(who={"reference": "share-link", "client_id": core.PORTAL_CLIENT}, action="R",
                                 interaction="read", references=[f"DiagnosticReport/{data['r']}",
                                                                 f"Patient/{data.get('p')}"],
                                 remote=request.remote_addr)
    return _download(rnd.report_pdf(details, None, lang()), "application/pdf", f"report-{data['r']}.pdf",
                     inline=True)


def _download(data: bytes, mime: str, filename: str, inline: bool = False) -> Response:
    resp = Response(data, mimetype=mime)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    resp.headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{safe}"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# -- imaging -------------------------------------------------------------------------------------
def imaging() -> Response:
    studies = core.user_fhir().search("ImagingStudy", [("patient", pid()), ("_count", "100")])
    for s in studies:
        s["_uid"] = next((i.get("value", "").removeprefix("urn:oid:") for i in s.get("identifier") or []
                          if i.get("system") == "urn:dicom:uid"), "")
    return page("imaging.html", studies=studies)


def viewer(study_id: str) -> Response:
    s = core.user_fhir().read("ImagingStudy", study_id)
    if s is None:
        abort(404)
    uid = next((i.get("value", "").removeprefix("urn:oid:") for i in s.get("identifier") or []
                if i.get("system") == "urn:dicom:uid"), "")
    series = s.get("series") or []
    si = min(parse_count(request.args.get("series", "0")) or 0, max(len(series) - 1, 0))
    instances = (series[si].get("instance") or []) if series else []
    n = min(parse_count(request.args.get("i", "0")) or 0, max(len(instances) - 1, 0))
    img = None
    if instances:
        img = url_for("portal.dicomweb", path=f"studies/{uid}/series/{series[si]['uid']}/instances/"
                      f"{instances[n]['uid']}/rendered")
    return page("viewer.html", s=s, series=series, si=si, n=n, count=len(instances), img=img)


def dicomweb(path: str) -> Response:
    """DICOMweb images for the signed-in user, through the DICOMweb views and the user's policy."""
    if not re.fullmatch(r"studies/[0-9.]+(/series/[0-9.]+(/instances/[0-9.]+)?)?/(thumbnail|rendered)", path):
        abort(404)
    adapter = current_app.url_map.bind("localhost")
    try:
        endpoint, args = adapter.match("/dicomweb/" + path, method="GET")
    except Exception:  # noqa: BLE001
        abort(404)
    g.fhir_access, g.fhir_principal = g.policy, g.principal
    return current_app.view_functions[endpoint](**args)


# -- appointments --------------------------------------------------------------------------------
def _appointments(f: core.Fhir, p: str) -> tuple[list[dict], list[dict]]:
    rows = f.search("Appointment", [("patient", p), ("_sort", "date"), ("_count", "200")])
    t = datetime.now(timezone.utc)
    up = [a for a in rows if (_when(a.get("start")) or t) >= t and a.get("status") not in ("cancelled",)]
    past = [a for a in rows if a not in up]
    return up, past[::-1]


def _open_schedules() -> list[dict]:
    return core.booking_fhir().search("Schedule", [("service-category", f"{ONLINE[0]}|{ONLINE[1]}"),
                                                   ("active", "true"), ("_count", "50")])


def _free_slots() -> list[tuple[dict, dict]]:
    out = []
    soon = datetime.now(timezone.utc).isoformat(timespec="seconds")
    user = core.user_fhir()
    for sch in _open_schedules():
        for s in user.search("Slot", [("schedule", f"Schedule/{sch['id']}"), ("status", "free"),
                                                  ("start", f"ge{soon}"), ("_sort", "start"), ("_count", "50")]):
            out.append((sch, s))
    out.sort(key=lambda x: x[1].get("start", ""))
    return out


def appointments() -> Response:
    up, past = _appointments(core.user_fhir(), pid())
    hours = getattr(core.services().settings, "portal_cancel_hours", 24)
    return page("appointments.html", up=up, past=past, hours=hours, slots=_free_slots())


def book_slot(policy: Any, patient_id: str, slot_id: str, reason: str = "") -> dict[str, Any]:
    """Book a free Slot of a Schedule open for online booking: in one transaction the booking row
    (its primary key is the slot), the Appointment (through the patient's policy) and the Slot
    marked busy (by the booking job). A second booking of the same slot fails at the database:
    SlotTaken. The Slot is locked only if the patient may see it."""
    from fhirserver.model.references import reference_id
    from portal.tables import portal_slot_booking as booking

    services = core.services()
    user = core.Fhir(policy)
    job = core.booking_fhir()
    try:
        with services.repo.transaction(write=True) as tx:
            tx.conn.execute(insert(booking).values(slot_id=slot_id, appointment_id="-", patient_id=patient_id,
                                                   created=int(time.time())))
            stored = tx.current("Slot", slot_id, for_update=True, where=policy.row_filter("Slot"))
            if stored is None or getattr(stored, "deleted", False) or stored.body is None:
                raise SlotTaken()
            slot = _load(stored.body)
            sched_id = reference_id(slot.get("schedule"), "Schedule", services.fhir_base())
            sch = (job.read("Schedule", sched_id, tx) if sched_id else None) or {}  # only online-bookable ones
            online = any(cd.get("system") == ONLINE[0] and cd.get("code") == ONLINE[1]
                         for c in sch.get("serviceCategory") or [] for cd in c.get("coding") or [])
            start = _when(slot.get("start"))
            if slot.get("status") != "free" or not online or start is None or start < datetime.now(timezone.utc):
                raise SlotTaken()
            actors = [a for a in sch.get("actor") or []]
            appt = {"resourceType": "Appointment", "status": "booked", "start": slot["start"], "end": slot["end"],
                    "slot": [{"reference": f"Slot/{slot_id}"}], "created": now_iso()[:10],
                    "serviceType": slot.get("serviceType") or sch.get("serviceType") or [],
                    "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}]
                    + [{"actor": a, "status": "accepted"} for a in actors]}
            if reason:
                appt["comment"] = reason[:1000]
            created = user.create("Appointment", appt, tx)
            job.update("Slot", slot_id, {**slot, "status": "busy"}, tx)
            tx.conn.execute(update(booking).where(booking.c.slot_id == slot_id).values(appointment_id=created["id"]))
    except IntegrityError:
        raise SlotTaken() from None
    return created


def _load(body: Any) -> dict[str, Any]:
    import json

    return json.loads(body) if isinstance(body, (str, bytes)) else dict(body)


def book() -> Response:
    slot_id = request.form.get("slot", "")
    reason = request.form.get("reason", "")
    if not slot_id:
        up, past = _appointments(core.user_fhir(), pid())
        return page("appointments.html", 400, up=up, past=past, slots=_free_slots(), form=request.form,
                    hours=getattr(core.services().settings, "portal_cancel_hours", 24),
                    errors={"slot": _("Choose a time.")})
    try:
        book_slot(g.policy, pid(), slot_id, reason)
    except SlotTaken:
        up, past = _appointments(core.user_fhir(), pid())
        return page("appointments.html", 409, up=up, past=past, slots=_free_slots(), form=request.form,
                    hours=getattr(core.services().settings, "portal_cancel_hours", 24),
                    errors={"slot": _("Sorry, this time was just booked by someone else. Choose another one.")})
    return back("portal.appointments", _("Your appointment is booked."))


def cancel(aid: str) -> Response:
    from portal.tables import portal_slot_booking as booking

    f = core.user_fhir()
    appt = f.read("Appointment", aid)
    if appt is None:
        abort(404)
    hours = getattr(core.services().settings, "portal_cancel_hours", 24)
    start = _when(appt.get("start"))
    if start is None or start - datetime.now(timezone.utc) < timedelta(hours=hours):
        up, past = _appointments(f, pid())
        return page("appointments.html", 409, up=up, past=past, slots=_free_slots(), hours=hours,
                    errors={"cancel": _("Appointments can be cancelled online until %(h)s hours before they "
                                        "start; please call the clinic.", h=hours)})
    job = core.booking_fhir()
    with f.repo.transaction(write=True) as tx:
        f.update("Appointment", aid, {**appt, "status": "cancelled",
                                      "cancelationReason": {"text": "cancelled by the patient online"}}, tx)
        # only the slots booked for this very appointment are freed: an Appointment the patient wrote
        # naming someone else's slot frees nothing
        booked = tx.conn.execute(select(booking.c.slot_id).where(booking.c.appointment_id == aid)).scalars().all()
        for sid in booked:
            cur = job.read("Slot", sid, tx)
            if cur is not None:
                job.update("Slot", sid, {**cur, "status": "free"}, tx)
            tx.conn.execute(delete(booking).where(booking.c.slot_id == sid, booking.c.appointment_id == aid))
    return back("portal.appointments", _("The appointment was cancelled."))


# -- documents -----------------------------------------------------------------------------------
def documents() -> Response:
    docs = core.user_fhir().search("DocumentReference", [("patient", pid()), ("_sort", "-date"), ("_count", "100")])
    return page("documents.html", docs=docs, limit_mb=_upload_limit() // (1024 * 1024))


def _upload_limit() -> int:
    return int(getattr(core.services().settings, "portal_upload_max_bytes", 5 * 1024 * 1024))


def upload() -> Response:
    form, errors = request.form, {}
    file = request.files.get("file")
    data = file.read(_upload_limit() + 1) if file and file.filename else b""
    mime = (file.mimetype if file else "") or ""
    if not file or not file.filename:
        errors["file"] = _("Choose a file.")
    elif mime not in UPLOAD_TYPES:
        errors["file"] = _("This type of file is not accepted (PDF, JPEG, PNG or plain text).")
    elif len(data) > _upload_limit():
        errors["file"] = _("The file is too large (limit %(mb)s MB).", mb=_upload_limit() // (1024 * 1024))
    if not form.get("description", "").strip():
        errors["description"] = _("Write a description.")
    if errors:
        docs = core.user_fhir().search("DocumentReference", [("patient", pid()), ("_count", "100")])
        return page("documents.html", 400, docs=docs, form=form, errors=errors,
                    limit_mb=_upload_limit() // (1024 * 1024))
    p = pid()
    f = core.user_fhir()
    with f.repo.transaction(write=True) as tx:
        # both written with the patient's own policy; the Binary is the patient's data through its
        # securityContext (never through the DocumentReference that points at it)
        binary = f.create("Binary", {"resourceType": "Binary", "contentType": mime,
                                     "securityContext": {"reference": f"Patient/{p}"},
                                     "data": base64.b64encode(data).decode()}, tx)
        f.create("DocumentReference", {
            "resourceType": "DocumentReference", "status": "current",
            "type": {"text": "Uploaded by the patient"}, "subject": {"reference": f"Patient/{p}"},
            "date": now_iso(), "author": [{"reference": g.user["fhir_user"]}] if g.user["fhir_user"] else [],
            "description": form["description"].strip()[:500],
            "content": [{"attachment": {"contentType": mime, "url": f"Binary/{binary['id']}", "size": len(data),
                                        "title": re.sub(r"[^\w. -]", "_", file.filename)[:200]}}]}, tx)
    return back("portal.documents", _("The file was uploaded."))


def document_file(did: str) -> Response:
    f = core.user_fhir()
    doc = f.read("DocumentReference", did)
    if doc is None:
        abort(404)
    att = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    if att.get("data"):
        data = base64.b64decode(att["data"])
    else:
        from fhirserver.model.references import reference_id

        # the Binary is read with the patient's own policy too: a DocumentReference the patient
        # wrote pointing at another patient's Binary opens nothing
        bid = reference_id(att.get("url"), "Binary", core.services().fhir_base())
        b = f.read("Binary", bid) if bid else None
        if b is None:
            abort(404)
        data = base64.b64decode(b.get("data") or "")
    return _download(data, att.get("contentType") or "application/octet-stream", att.get("title") or did)


# -- messages -------------------------------------------------------------------------------------
def _clinicians() -> list[dict]:
    return core.user_fhir().search("Practitioner", [("_count", "100")])


def _threads(rows: list[dict]) -> list[dict]:
    """Messages as threads: each message that answers another (`inResponseTo`) is listed under the
    first message of its thread, oldest reply first; threads are newest first."""
    by_id = {r.get("id"): r for r in rows}

    def root(r: dict) -> dict:
        seen = set()
        while r.get("id") not in seen:
            seen.add(r.get("id"))
            parent = next((by_id.get(_ref_id(x, "Communication")) for x in r.get("inResponseTo") or []
                           if _ref_id(x, "Communication") in by_id), None)
            if parent is None:
                break
            r = parent
        return r

    replies: dict[str, list[dict]] = {}
    tops = []
    for r in rows:
        top = root(r)
        if top is r:
            tops.append(r)
        else:
            replies.setdefault(top.get("id"), []).append(r)
    out = []
    for t in sorted(tops, key=lambda r: r.get("sent") or "", reverse=True):
        out.append({**t, "replies": sorted(replies.get(t.get("id"), []), key=lambda r: r.get("sent") or "")})
    return out


def _sender_name(ref: str | None, names: dict[str, str]) -> str:
    if not ref:
        return ""
    if ref == (g.user or {}).get("fhir_user") or ref == f"Patient/{pid()}":
        return _("You")
    return names.get(ref, ref)


def _messages_page(status: int = 200, **kw: Any) -> Response:
    rows = core.user_fhir().search("Communication", [("subject", f"Patient/{pid()}"), ("_sort", "-sent"),
                                                      ("_count", "100")])
    docs = _clinicians()
    names = {f"Practitioner/{c['id']}": rnd.human_name(c) for c in docs}
    return page("messages.html", status, msgs=_threads(rows), clinicians=docs,
                sender=lambda ref: _sender_name(ref, names), **kw)


def messages() -> Response:
    return _messages_page()


def send_message() -> Response:
    from fhirserver.notify import send_email

    form, errors = request.form, {}
    kind = form.get("kind", "message")
    to = form.get("to", "")
    docs = {c["id"]: c for c in _clinicians()}
    if kind == "message" and to not in docs:
        errors["to"] = _("Choose a clinician.")
    if kind == "message" and not form.get("subject", "").strip():
        errors["subject"] = _("Write a subject.")
    if not form.get("text", "").strip():
        errors["text" if kind == "message" else "note"] = _("Write your message.")
    if errors:
        return _messages_page(400, form=form, errors=errors)
    p = pid()
    me = g.user["fhir_user"] or f"Patient/{p}"
    body = {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{p}"},
            "sent": now_iso(), "sender": {"reference": me},
            "payload": [{"contentString": form["text"].strip()[:10000]}]}
    if kind == "message":
        body["recipient"] = [{"reference": f"Practitioner/{to}"}]
        body["topic"] = {"text": form["subject"].strip()[:200]}
        body["category"] = [{"text": "message"}]
    else:
        body["recipient"] = [{"reference": f"Patient/{p}"}]
        body["category"] = [{"text": "note"}]
        body["topic"] = {"text": "Note to my record"}
    f = core.user_fhir()
    with f.repo.transaction(write=True) as tx:
        made = f.create("Communication", body, tx)
        if kind == "message":
            email = next((t.get("value") for t in docs[to].get("telecom") or [] if t.get("system") == "email"), None)
            if email:
                link = f"{core.services().root_url()}/console/messages/{made.get('id')}"
                send_email(tx.conn, core.services().settings.smtp_url, email, "New secure message from a patient",
                           "A patient sent you a secure message in the portal. Sign in to the staff console "
                           f"to read it (the message is not included in this email):\n{link}\n", patient_id=p)
    return back("portal.messages", _("Your message was sent.") if kind == "message" else _("The note was saved."))


# -- invoices, questionnaires --------------------------------------------------------------------
def invoices() -> Response:
    rows = core.user_fhir().search("Invoice", [("patient", pid()), ("_count", "100")])
    return page("invoices.html", invoices=rows)


def invoice_pdf(iid: str) -> Response:
    f = core.user_fhir()
    inv = f.read("Invoice", iid)
    if inv is None:
        abort(404)
    issuer_id = _ref_id(inv.get("issuer"), "Organization")
    issuer = f.read("Organization", issuer_id) if issuer_id else None
    data = rnd.invoice_pdf(inv, rnd.human_name(g.patient_res), rnd.human_name(issuer), lang())
    return _download(data, "application/pdf", f"invoice-{iid}.pdf")


def questionnaires() -> Response:
    qs = core.user_fhir().search("Questionnaire", [("status", "active"), ("_count", "50")])
    done = core.user_fhir().search("QuestionnaireResponse", [("patient", pid()), ("_count", "100")])
    return page("questionnaires.html", qs=qs, done=done)


def _items(items: list[dict]) -> list[dict]:
    out = []
    for it in items or []:
        if it.get("type") == "group":
            out += _items(it.get("item") or [])
        elif it.get("type") != "display":
            out.append(it)
    return out


def questionnaire(qid: str) -> Response:
    q = core.user_fhir().read("Questionnaire", qid)
    if q is None:
        abort(404)
    items = _items(q.get("item") or [])
    if request.method == "GET":
        return page("questionnaire.html", q=q, items=items)
    form, errors, answers = request.form, {}, []
    for it in items:
        lid, t = it["linkId"], it.get("type", "string")
        raw = form.get(f"q_{lid}", "").strip()
        if t == "boolean":
            raw = raw if raw in ("true", "false") else ""
        if not raw:
            if it.get("required"):
                errors[lid] = _("This answer is required.")
            continue
        if t == "integer":
            if not re.fullmatch(r"-?\d{1,9}", raw):
                errors[lid] = _("Enter a whole number.")
                continue
            ans = {"valueInteger": int(raw)}
        elif t == "date":
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                errors[lid] = _("Enter a date (YYYY-MM-DD).")
                continue
            ans = {"valueDate": raw}
        elif t == "boolean":
            ans = {"valueBoolean": raw == "true"}
        elif t == "choice":
            opt = next((o["valueCoding"] for o in it.get("answerOption") or []
                        if "valueCoding" in o and o["valueCoding"].get("code") == raw), None)
            ans = {"valueCoding": opt} if opt else {"valueString": raw}
        else:
            ans = {"valueString": raw[:5000]}
        answers.append({"linkId": lid, "text": it.get("text"), "answer": [ans]})
    if errors:
        return page("questionnaire.html", 400, q=q, items=items, form=form, errors=errors)
    core.user_fhir().create("QuestionnaireResponse", {
        "resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": q.get("url") or f"Questionnaire/{qid}",
        "subject": {"reference": f"Patient/{pid()}"}, "authored": now_iso(),
        "author": {"reference": g.user["fhir_user"]} if g.user["fhir_user"] else None, "item": answers})
    return back("portal.questionnaires", _("Thank you, your answers were saved."))


# -- sharing, access log, profile ----------------------------------------------------------------
def _share_state() -> dict[str, Any]:
    f = core.user_fhir()
    consents = [c for c in f.search("Consent", [("patient", pid()), ("_count", "100")]) if c.get("status") == "active"]
    orgs = {o["id"]: o for o in f.search("Organization", [("_count", "100")])}
    for c in consents:
        actor = ((c.get("provision") or {}).get("actor") or [{}])[0].get("reference", {}).get("reference", "")
        c["_org"] = rnd.human_name(orgs.get(_ref_id(actor, "Organization") or "")) or actor
        c["_imaging"] = any(k.get("code") == "ImagingStudy" for k in (c.get("provision") or {}).get("class") or [])
    try:
        reqs = f.operation("Patient", pid(), "$access-requests")
        pending = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r["part"]}
                   for r in reqs.get("parameter") or []]
    except FhirError:
        pending = []
    for r in pending:
        oid = _ref_id(r.get("organization"), "Organization") or ""
        r["_org"] = rnd.human_name(orgs.get(oid)) or oid
    return {"consents": consents, "orgs": list(orgs.values()), "pending": pending}


def sharing() -> Response:
    return page("sharing.html", **_share_state())


def grant() -> Response:
    from fhirserver.operations.sharing import _consent

    org = request.form.get("organization", "")
    state = _share_state()
    if org not in {o["id"] for o in state["orgs"]}:
        return page("sharing.html", 400, form=request.form, errors={"organization": _("Choose an organization.")},
                    **state)
    core.user_fhir().create("Consent", _consent(pid(), org, request.form.get("what") == "imaging",
                                                "granted by the patient in the portal"))
    return back("portal.sharing", _("Access was granted."))


def revoke(cid: str) -> Response:
    f = core.user_fhir()
    c = f.read("Consent", cid)
    if c is None:
        abort(404)
    f.update("Consent", cid, {**c, "status": "inactive"})
    return back("portal.sharing", _("Access was revoked."))


def respond(rid: str) -> Response:
    decision = "accept" if request.form.get("decision") == "accept" else "reject"
    core.user_fhir().operation("Patient", pid(), "$respond-access", method="POST", body={
        "resourceType": "Parameters", "parameter": [{"name": "request", "valueString": rid},
                                                    {"name": "decision", "valueString": decision}]})
    return back("portal.sharing", _("Access was granted.") if decision == "accept" else _("Access was revoked."))


def access_log() -> Response:
    try:
        log = core.user_fhir().operation("Patient", pid(), "$access-log", [("_count", "200")])
    except FhirError:
        log = {}
    events = []
    for e in (log or {}).get("entry") or []:
        r = e.get("resource") or {}
        who = ", ".join((a.get("who") or {}).get("reference") or (a.get("who") or {}).get("display") or
                        (a.get("who") or {}).get("identifier", {}).get("value", "") for a in r.get("agent") or [])
        what = ", ".join((x.get("what") or {}).get("reference", "") for x in r.get("entity") or [])
        events.append({"when": (r.get("recorded") or "")[:19].replace("T", " "), "who": who,
                       "action": r.get("action", ""), "what": what})
    return page("access_log.html", events=events)


def _account() -> dict[str, Any]:
    from fhirserver.access.tables import lifecycle_account as acct

    with core.engine().connect() as conn:
        row = conn.execute(select(acct).where(acct.c.user_pk == g.user["pk"])).mappings().first()
    return dict(row) if row else {}


def profile() -> Response:
    from fhirserver.access.tables import lifecycle_account as acct
    from smart_auth import store

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
        values["security_answer_hash"] = store.hash_password(form["answer"].strip().lower())
    if values and account:
        with core.engine().begin() as conn:
            conn.execute(update(acct).where(acct.c.user_pk == g.user["pk"]).values(**values))
    if g.patient_res and g.user["role"] == "patient":
        if form.get("lang") in LANGS:
            _save_language(form["lang"])
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


def blueprint() -> Blueprint:
    bp = Blueprint("portal", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    bp.before_request(before)
    R = [("/login", login, ["GET", "POST"]), ("/logout", logout, ["POST"]), ("/forgot", forgot, ["GET", "POST"]),
         ("/reset", reset, ["GET", "POST"]), ("/password", password, ["GET", "POST"]), ("/lang", set_lang, ["POST"]),
         ("/switch", switch, ["POST"]), ("/", home, ["GET"]), ("/reports", reports, ["GET"]),
         ("/reports/<rid>", report, ["GET"]), ("/reports/<rid>.pdf", report_pdf, ["GET"]),
         ("/reports/<rid>/form/<int:idx>", report_form, ["GET"]),
         ("/reports/<rid>/revoke", report_revoke, ["POST"]), ("/share/<token>", share, ["GET"]),
         ("/imaging", imaging, ["GET"]), ("/imaging/<study_id>", viewer, ["GET"]),
         ("/dicomweb/<path:path>", dicomweb, ["GET"]),
         ("/appointments", appointments, ["GET"]), ("/appointments/book", book, ["POST"]),
         ("/appointments/<aid>/cancel", cancel, ["POST"]), ("/documents", documents, ["GET"]),
         ("/documents/upload", upload, ["POST"]), ("/documents/<did>/file", document_file, ["GET"]),
         ("/messages", messages, ["GET"]), ("/messages/send", send_message, ["POST"]),
         ("/invoices", invoices, ["GET"]), ("/invoices/<iid>.pdf", invoice_pdf, ["GET"]),
         ("/questionnaires", questionnaires, ["GET"]), ("/questionnaires/<qid>", questionnaire, ["GET", "POST"]),
         ("/sharing", sharing, ["GET"]), ("/sharing/grant", grant, ["POST"]),
         ("/sharing/<cid>/revoke", revoke, ["POST"]), ("/sharing/requests/<rid>", respond, ["POST"]),
         ("/access-log", access_log, ["GET"]), ("/profile", profile, ["GET", "POST"]), ("/photo", photo, ["GET"]),
         ("/dev/mail", dev_mail, ["GET"])]
    for rule, view, methods in R:
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
    return bp
