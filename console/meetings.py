"""Meeting lists (seed 001's MDT meetings): a named, dated list of patients to discuss, kept as a
FHIR Group (type person, actual) managed by the staff member's organization. The access gate
shows a Group only to who may see every patient on it; the pages list the meetings of the
staff member's own organizations (`managing-entity`)."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, abort, g, request

from console import core
from console.core import _, page, patient_or_404
from fhirserver.errors import FhirError

MEETING = {"system": "urn:fhirserver:console", "code": "meeting", "display": "Meeting"}
DATE_URL = "http://fhirserver.local/StructureDefinition/meeting-date"
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2})?$")


def clinic_time(value: str) -> str:
    """A date, or a local date and time from the form read in the clinic's time zone (FHIR wants
    an offset on every dateTime with a time)."""
    if "T" not in value:
        return value
    from datetime import datetime
    from zoneinfo import ZoneInfo

    try:
        zone = ZoneInfo(core.services().settings.clinic_timezone or "UTC")
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromisoformat(value).replace(tzinfo=zone).isoformat(timespec="seconds")


def is_meeting(grp: dict[str, Any]) -> bool:
    return any(c.get("system") == MEETING["system"] and c.get("code") == MEETING["code"]
               for c in (grp.get("code") or {}).get("coding") or [])


def when(grp: dict[str, Any]) -> str:
    return next((e.get("valueDateTime", "") for e in grp.get("extension") or [] if e.get("url") == DATE_URL), "")


def members(grp: dict[str, Any]) -> list[str]:
    return [pid for m in grp.get("member") or [] if (pid := core.ref_id(m.get("entity"), "Patient"))]


def mine() -> list[dict[str, Any]]:
    """The meetings of the staff member's organizations, soonest first."""
    f = core.fhir()
    out = []
    for org in g.user["organizations"]:
        for grp in f.search("Group", [("managing-entity", f"Organization/{org}"), ("_count", "100")]):
            if is_meeting(grp):
                out.append(grp)
    return sorted(out, key=when)


def meeting_or_404(gid: str) -> dict[str, Any]:
    grp = core.fhir().read("Group", gid)
    if grp is None or not is_meeting(grp) or \
            core.ref_id(grp.get("managingEntity"), "Organization") not in g.user["organizations"]:
        abort(404)
    return grp


def index() -> Response:
    if request.method == "GET":
        return page("meetings.html", meetings=mine(), meeting_when=when)
    name = (request.form.get("name") or "").strip()[:100]
    date = (request.form.get("date") or "").strip()
    errors = {}
    if not name:
        errors["name"] = _("Enter a name.")
    if not DATETIME_RE.match(date):
        errors["date"] = _("Enter a date and time.")
    orgs = g.user["organizations"]
    if not orgs:
        errors["form"] = _("Choose an organization.")
    if errors:
        return page("meetings.html", 400, meetings=mine(), meeting_when=when, form=request.form, errors=errors)
    body = {"resourceType": "Group", "type": "person", "actual": True, "name": name,
            "code": {"coding": [MEETING], "text": "Meeting"},
            "extension": [{"url": DATE_URL, "valueDateTime": clinic_time(date)}],
            "managingEntity": {"reference": f"Organization/{orgs[0]}"}}
    try:
        grp = core.fhir().create("Group", body)
    except FhirError as exc:
        return page("meetings.html", 400, meetings=mine(), meeting_when=when, form=request.form, errors={"form": core.error_text(exc)})
    return core.back("console.meetings.show", _("The meeting was created."), gid=grp["id"])


def show(gid: str) -> Response:
    grp = meeting_or_404(gid)
    f = core.fhir()
    pats = [p for pid in members(grp) if (p := f.read("Patient", pid)) is not None]
    return page("meeting.html", m=grp, when=when(grp), patients=pats)


def _save(grp: dict[str, Any], back_to: tuple[str, dict[str, str]], msg: str) -> Response:
    return core.write_then_back(lambda: core.fhir().update("Group", grp["id"], grp), back_to[0], msg, **back_to[1])


def add_patient(pid: str) -> Response:
    """Put the patient on one of the organization's meetings (from the patient's page)."""
    patient_or_404(pid)
    grp = meeting_or_404(request.form.get("meeting", ""))
    if pid not in members(grp):
        grp = {**grp, "member": [*(grp.get("member") or []), {"entity": {"reference": f"Patient/{pid}"}}]}
    return _save(grp, ("console.detail.show", {"pid": pid}), _("The patient was added to the meeting."))


def remove_patient(gid: str) -> Response:
    grp = meeting_or_404(gid)
    pid = request.form.get("patient", "")
    kept = [m for m in grp.get("member") or [] if core.ref_id(m.get("entity"), "Patient") != pid]
    grp = {k: v for k, v in grp.items() if k != "member"}
    if kept:
        grp["member"] = kept
    return _save(grp, ("console.meetings.show", {"gid": gid}), _("The patient was removed from the meeting."))


def of_patient(pid: str) -> list[dict[str, Any]]:
    """The organization's meetings that list this patient."""
    return [m for m in mine() if pid in members(m)]


def blueprint() -> Blueprint:
    bp = Blueprint("meetings", __name__)
    bp.add_url_rule("/meetings", "index", index, methods=["GET", "POST"])
    bp.add_url_rule("/meetings/<gid>", "show", show, methods=["GET"])
    bp.add_url_rule("/meetings/<gid>/remove", "remove_patient", remove_patient, methods=["POST"])
    bp.add_url_rule("/patients/<pid>/meetings", "add_patient", add_patient, methods=["POST"])
    return bp
