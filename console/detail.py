"""Patient detail: demographics (seed 002's fields), records newest first within a visit-time
range, observations, images (thumbnails, to the viewer), reports (view, PDF, QR code of the
share link), documents, notes, tags, meetings, sharing state, access requests and the patient's
access log; edit; the lifecycle operations `$invite`, `$unlink`, `$reactivate`, `$close` as the
staff member (the operations decide what each may do)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, make_response, request
from sqlalchemy import select

from console import access_requests, core, meetings, notes
from console.core import _, page
from console.patient_form import FIELDS, GENDERS, age, form_of, is_alias, patient_body, validate
from console.patients import CASE_SYSTEM, CASE_TYPES, DATE_RE
from fhirserver.errors import FhirError
from fhirserver.access import lifecycle_account
from fhirserver.operations import concept_text, report_pdf as render_report_pdf, share_url_for
from portal import report_details, report_or_404, report_page_details

SYSTEM_TAGS = ("urn:fhirserver:owner",)
AUDIT_ACTIONS = {"C": "created", "R": "read", "U": "changed", "D": "deleted", "E": "searched or ran"}
LOG_ROWS = 30
USER_TAG_SYSTEM = "urn:fhirserver:console:tag"
# where a record's visit time is, per type
RECORD_TYPES = {
    "Appointment": ("start",), "Encounter": ("period.start",), "ServiceRequest": ("occurrenceDateTime", "authoredOn"),
    "ImagingStudy": ("started",), "DiagnosticReport": ("effectiveDateTime", "issued"),
    "DocumentReference": ("date",), "Communication": ("sent",),
}


patient_or_404 = core.patient_or_404


def _when(res: dict[str, Any]) -> str:
    for path in RECORD_TYPES.get(res.get("resourceType", ""), ()):
        cur: Any = res
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, str):
            return cur
    return (res.get("meta") or {}).get("lastUpdated", "")


def _title(res: dict[str, Any]) -> str:
    t = res.get("resourceType")
    if t == "ImagingStudy":
        mods = ", ".join(m.get("code", "") for m in res.get("modality") or [])
        return " ".join(x for x in (mods, res.get("description") or "") if x) or _("Study")
    if t == "DocumentReference":
        return res.get("description") or next((c.get("attachment", {}).get("title", "") for c in res.get("content") or []), "")
    if t == "Communication":
        return (res.get("topic") or {}).get("text", "")
    if t == "Appointment":
        return res.get("description") or concept_text(next(iter(res.get("serviceType") or []), None))
    return concept_text(res.get("code") or next(iter(res.get("type") or []), None)) or t


def describe(ref: str) -> str:
    """A moved resource in words: its type, what it is and when ("ImagingStudy · CT CBCT jaw · 2024-01-15")."""
    t, _s, i = ref.partition("/")
    res = core.fhir().read(t, i) if t and i else None
    if res is None:
        return ref
    return " · ".join(x for x in (t, _title(res), _when(res)[:10]) if x)


def records(pid: str, since: str = "", until: str = "") -> list[dict[str, Any]]:
    """The patient's records of every kind the staff member may see, newest first, with their
    visit time between `since` and `until` (dates, inclusive)."""
    f = core.fhir()
    out = []
    for t in RECORD_TYPES:
        for r in f.search(t, [("patient" if t != "Communication" else "subject", f"Patient/{pid}"), ("_count", "200")]):
            when = _when(r)
            day = when[:10]
            if (since and day < since) or (until and day > until):
                continue
            out.append({"type": t, "id": r["id"], "when": when, "title": _title(r), "status": r.get("status", ""),
                        "res": r})
    return sorted(out, key=lambda x: x["when"], reverse=True)


def study_uid(s: dict[str, Any]) -> str:
    return next((i.get("value", "").removeprefix("urn:oid:") for i in s.get("identifier") or []
                 if i.get("system") == "urn:dicom:uid"), "")


def _sharing(pid: str) -> list[dict[str, Any]]:
    f = core.fhir()
    out = []
    for c in f.search("Consent", [("patient", f"Patient/{pid}"), ("status", "active"), ("_count", "50")]):
        actors = [a.get("reference", {}).get("reference", "") for a in (c.get("provision") or {}).get("actor") or []]
        names = []
        for a in actors:
            oid = core.ref_id(a, "Organization")
            org = f.read("Organization", oid) if oid else None
            names.append((org or {}).get("name") or a)
        imaging = any(k.get("code") == "ImagingStudy" for k in (c.get("provision") or {}).get("class") or [])
        out.append({"id": c["id"], "who": ", ".join(names) or _("everything"), "imaging": imaging})
    return out


def _access_log(pid: str) -> list[dict[str, str]]:
    try:
        log = core.fhir().operation("Patient", pid, "$access-log", [("_count", "50")])
    except FhirError:
        return []
    events = []
    for e in (log or {}).get("entry") or []:
        r = e.get("resource") or {}
        who = ", ".join((a.get("who") or {}).get("reference") or (a.get("who") or {}).get("display") or
                        ((a.get("who") or {}).get("identifier") or {}).get("value", "") for a in r.get("agent") or [])
        what = ", ".join((x.get("what") or {}).get("reference", "") for x in r.get("entity") or [])
        events.append({"when": (r.get("recorded") or "")[:19].replace("T", " "), "who": who,
                       "action": r.get("action", ""), "what": what})
    return events


def _account_state(pid: str) -> str:
    with core.engine().connect() as conn:
        row = conn.execute(select(lifecycle_account.c.status).where(
            lifecycle_account.c.res_type == "Patient", lifecycle_account.c.res_id == pid)).first()
    return row[0] if row else ""


def show(pid: str) -> Response:
    p = patient_or_404(pid)
    since = request.args.get("from", "") if DATE_RE.match(request.args.get("from", "")) else ""
    until = request.args.get("to", "") if DATE_RE.match(request.args.get("to", "")) else ""
    recs = records(pid, since, until)
    all_recs = recs if not (since or until) else records(pid)
    studies = [r["res"] for r in all_recs if r["type"] == "ImagingStudy"]
    for s in studies:
        s["_uid"] = study_uid(s)
    reports = [r["res"] for r in all_recs if r["type"] == "DiagnosticReport"]
    docs = [r["res"] for r in all_recs if r["type"] == "DocumentReference" and not notes.is_note(r["res"])]
    note_rows = [{"when": _when(r["res"]), "text": notes.note_text(r["res"]),
                  "author": ((r["res"].get("author") or [{}])[0]).get("reference", "")}
                 for r in all_recs if r["type"] == "DocumentReference" and notes.is_note(r["res"])]
    obs = core.fhir().search("Observation", [("patient", f"Patient/{pid}"), ("_sort", "-date"), ("_count", "50")])
    requests_, may_answer = access_requests.pending(pid)
    all_meetings = meetings.mine()
    tickets = [r["res"] for r in all_recs if r["type"] == "ServiceRequest"]
    cases = sorted({c.get("code") for t in tickets for cat in t.get("category") or [] for c in cat.get("coding") or []
                    if c.get("system") == CASE_SYSTEM})
    tags = [t for t in (p.get("meta") or {}).get("tag") or [] if t.get("system") not in SYSTEM_TAGS]
    return page("patient.html", p=p, f=form_of(p), age=age(p.get("birthDate")), records=recs, studies=studies,
                reports=reports, docs=docs, tickets=tickets, cases=[dict(CASE_TYPES).get(c, c) for c in cases],
                tags=tags, sharing=_sharing(pid), log=_access_log(pid)[:LOG_ROWS], account=_account_state(pid),
                actions=AUDIT_ACTIONS, notes=note_rows, observations=obs, access_requests=requests_,
                may_answer=may_answer, meetings=[m for m in all_meetings if pid in meetings.members(m)],
                other_meetings=[m for m in all_meetings if pid not in meetings.members(m)],
                meeting_when=meetings.when, value=observation_value,
                alias=is_alias(p), range={"from": since, "to": until})


def observation_value(o: dict[str, Any]) -> str:
    q = o.get("valueQuantity")
    if isinstance(q, dict):
        return f"{q.get('value', '')} {q.get('unit', '')}".strip()
    for k in ("valueString", "valueInteger", "valueBoolean"):
        if k in o:
            return str(o[k])
    return concept_text(o.get("valueCodeableConcept")) if o.get("valueCodeableConcept") else ""


def edit(pid: str) -> Response:
    p = patient_or_404(pid)
    if request.method == "GET":
        return page("edit_patient.html", p=p, form=form_of(p), genders=GENDERS)
    alias = is_alias(p)
    v, errors = validate(request.form, _, alias=alias)
    if errors:
        return page("edit_patient.html", 400, p=p, form=request.form, errors=errors, genders=GENDERS)
    body = patient_body(v, None, base=p)
    if alias and (v["first"] or v["last"]):  # personal data given later: no longer an alias
        body = core.with_tags(body, [t for t in (p.get("meta") or {}).get("tag") or [] if t.get("code") != "alias"])
    try:
        core.fhir().update("Patient", pid, body)
    except FhirError as exc:
        return page("edit_patient.html", 400, p=p, form=request.form, errors={"form": core.error_text(exc)},
                    genders=GENDERS)
    return core.back("console.detail.show", _("The patient was saved."), pid=pid)


def _lifecycle(pid: str, op: str, done: str, params: list[tuple[str, Any]] = ()) -> Response:
    try:
        core.fhir().op("Patient", pid, op, params)
    except FhirError as exc:
        if exc.status == 404:
            abort(404)
        return core.back("console.detail.show", core.error_text(exc), pid=pid)
    if op == "$unlink":  # the profile is no longer ours to see: a page that can still bring it back
        return core.back("console.detail.unlinked", done, pid=pid)
    return core.back("console.detail.show", done, pid=pid)


def unlink(pid: str) -> Response:
    return _lifecycle(pid, "$unlink", _("The patient was removed from your list."))


def close(pid: str) -> Response:
    return _lifecycle(pid, "$close", _("The account is closed."))


def reactivate(pid: str) -> Response:
    return _lifecycle(pid, "$reactivate", _("The patient is active again."))


def unlinked(pid: str) -> Response:
    """After an unlink: the profile is gone from the list (nothing of it is shown here), with the
    seed's way back, Reactivate, which the access rules allow only to its former organization."""
    from fhirserver.interactions import check_id

    try:
        check_id(pid)
    except FhirError:
        abort(404)
    return page("unlinked.html", pid=pid)


def invite(pid: str) -> Response:
    from smart_auth import verify_hash

    patient_or_404(pid)
    if not verify_hash(g.user["password_hash"], request.form.get("password", "")):
        return core.back("console.detail.show", _("Enter your password to confirm the invitation."), pid=pid)
    return _lifecycle(pid, "$invite", _("The invitation was sent."), [("password", request.form.get("password", ""))])


def tag(pid: str) -> Response:
    p = patient_or_404(pid)
    text = (request.form.get("tag") or "").strip()[:60]
    tags = list((p.get("meta") or {}).get("tag") or [])
    if request.form.get("remove"):
        tags = [t for t in tags if not (t.get("system") == USER_TAG_SYSTEM and t.get("code") == request.form["remove"])]
        msg = _("The tag was removed.")
    elif text:
        code = text.lower()
        if not any(t.get("system") == USER_TAG_SYSTEM and t.get("code") == code for t in tags):
            tags.append({"system": USER_TAG_SYSTEM, "code": code, "display": text})
        msg = _("The tag was added.")
    else:
        return core.back("console.detail.show", None, pid=pid)
    return core.write_then_back(lambda: core.fhir().update("Patient", pid, core.with_tags(p, tags)),
                                "console.detail.show", msg, pid=pid)


def report(rid: str) -> Response:
    f = core.fhir()
    rep = report_or_404(f, rid)
    d = report_page_details(f, rep)
    pid = core.ref_id(rep.get("subject"), "Patient")
    return page("report.html", rep=rep, d=d, pid=pid, qr=report_qr(rid, pid))


def report_qr(rid: str, pid: str | None) -> dict[str, Any] | None:
    """The report's share link (carrying this staff member's current access, as a portal share
    link does) and its QR code as inline SVG, so a phone scanning the printout or the screen
    opens the PDF."""
    import segno
    from markupsafe import Markup

    url = share_url_for(core.services(), rid, pid, g.user["pk"])
    if url is None:
        return None
    svg = segno.make(url, error="m").svg_inline(scale=4, title=_("QR code of the report's share link"))
    return {"url": url, "svg": Markup(svg)}


def report_pdf(rid: str) -> Response:
    f = core.fhir()
    d = report_details(f, report_or_404(f, rid))
    resp = make_response(render_report_pdf(d, None, core.lang()))
    resp.headers["Content-Type"] = "application/pdf"
    resp.headers["Content-Disposition"] = f'inline; filename="report-{rid}.pdf"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def blueprint() -> Blueprint:
    bp = Blueprint("detail", __name__)
    bp.add_url_rule("/patients/<pid>", "show", show, methods=["GET"])
    bp.add_url_rule("/patients/<pid>/edit", "edit", edit, methods=["GET", "POST"])
    for name, view in (("unlink", unlink), ("close", close), ("reactivate", reactivate), ("invite", invite),
                       ("tag", tag)):
        bp.add_url_rule(f"/patients/<pid>/{name}", name, view, methods=["POST"])
    bp.add_url_rule("/patients/<pid>/unlinked", "unlinked", unlinked, methods=["GET"])
    bp.add_url_rule("/reports/<rid>", "report", report, methods=["GET"])
    bp.add_url_rule("/reports/<rid>.pdf", "report_pdf", report_pdf, methods=["GET"])
    return bp


__all__ = ["FIELDS", "blueprint", "records", "study_uid"]
