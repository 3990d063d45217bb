"""Scan tickets: an order for the scanner (intraoral, face scan, CBCT, X-ray) with case type,
visit type and doctor. Each is a ServiceRequest (accession number, DICOM modality code, case type
as category) with an Appointment at the scheduled time, so the modality worklist serves it and a
study arriving with that accession completes it (dicom.bridge)."""
from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, g, request

from console import core
from console.core import _, page
from console.detail import patient_or_404
from console.patients import CASE_SYSTEM, CASE_TYPES
from fhirserver.errors import FhirError

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
AE_SYSTEM = "urn:dicom:ae"
VISIT_SYSTEM = "urn:fhirserver:console:visit-type"
# scan type -> (DICOM modality, label)
SCAN_TYPES = {"intraoral": ("IO", "Intraoral"), "face": ("OSS", "Face scan"), "cbct": ("CT", "CBCT"),
              "xray": ("DX", "X-ray")}
VISIT_TYPES = (("first", "First visit"), ("follow-up", "Follow-up"), ("emergency", "Emergency"))
AE_RE = re.compile(r"^[A-Za-z0-9_ .-]{1,16}$")
WHEN_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")


def new_accession() -> str:
    return "ST" + secrets.token_hex(5).upper()


def validate(form: Any, doctors: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    v = {k: (form.get(k) or "").strip()[:200] for k in ("scan", "case", "visit", "doctor", "when", "ae", "note")}
    errors = {}
    if v["scan"] not in SCAN_TYPES:
        errors["scan"] = _("Choose a scan type.")
    if v["case"] and v["case"] not in dict(CASE_TYPES):
        errors["case"] = _("Choose a case type.")
    if v["visit"] and v["visit"] not in dict(VISIT_TYPES):
        errors["visit"] = _("Choose a visit type.")
    if v["doctor"] and v["doctor"] not in doctors:
        errors["doctor"] = _("Choose a clinician.")
    if v["when"] and not WHEN_RE.match(v["when"]):
        errors["when"] = _("Enter a date and time.")
    if v["ae"] and not AE_RE.match(v["ae"]):
        errors["ae"] = _("Enter a valid AE title (up to 16 letters or digits).")
    return v, errors


def _start(when: str) -> datetime:
    if when:
        return datetime.fromisoformat(when).astimezone(timezone.utc)  # typed in the clinic's local time
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


def bodies(pid: str, v: dict[str, str], doctors: dict[str, str], organization: str | None,
           accession: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ServiceRequest and its Appointment (referenced by `urn:uuid` within one Bundle)."""
    modality, label = SCAN_TYPES[v["scan"]]
    start = _start(v["when"])
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": ACSN, "system": "urn:fhirserver:console:accession", "value": accession}],
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": DCM, "code": modality, "display": label}], "text": label},
        "authoredOn": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "occurrenceDateTime": start.isoformat(timespec="seconds"),
    }
    if v["case"]:
        sr["category"] = [{"coding": [{"system": CASE_SYSTEM, "code": v["case"],
                                       "display": dict(CASE_TYPES)[v["case"]]}]}]
    if v["visit"]:
        sr["orderDetail"] = [{"coding": [{"system": VISIT_SYSTEM, "code": v["visit"],
                                          "display": dict(VISIT_TYPES)[v["visit"]]}]}]
    if v["doctor"]:
        sr["requester"] = {"reference": f"Practitioner/{v['doctor']}", "display": doctors[v["doctor"]]}
    if v["ae"]:
        sr["performer"] = [{"identifier": {"system": AE_SYSTEM, "value": v["ae"]}, "display": v["ae"]}]
    if v["note"]:
        sr["note"] = [{"text": v["note"]}]
    participants: list[dict[str, Any]] = [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"}]
    if v["doctor"]:
        participants.append({"actor": {"reference": f"Practitioner/{v['doctor']}"}, "status": "accepted"})
    if v["ae"]:
        participants.append({"actor": {"identifier": {"system": AE_SYSTEM, "value": v["ae"]}, "display": v["ae"]},
                             "status": "accepted"})
    appt = {"resourceType": "Appointment", "status": "booked", "description": f"{label} scan",
            "serviceType": [{"coding": [{"system": DCM, "code": modality, "display": label}], "text": label}],
            "start": start.isoformat(timespec="seconds"),
            "end": (start + timedelta(minutes=30)).isoformat(timespec="seconds"),
            "participant": participants}
    return sr, appt


def doctors() -> dict[str, str]:
    return {d["id"]: core.display_name(d) for d in core.fhir().search("Practitioner", [("_count", "100")])}


def new(pid: str) -> Response:
    p = patient_or_404(pid)
    docs = doctors()
    kw = dict(p=p, scan_types=SCAN_TYPES, case_types=CASE_TYPES, visit_types=VISIT_TYPES, doctors=docs)
    if request.method == "GET":
        me = core.ref_id({"reference": g.user.get("fhir_user") or ""}, "Practitioner")
        return page("ticket.html", form={"doctor": me or ""}, **kw)
    v, errors = validate(request.form, docs)
    if errors:
        return page("ticket.html", 400, form=request.form, errors=errors, **kw)
    org = core.ref_id(p.get("managingOrganization"), "Organization")
    sr, appt = bodies(pid, v, docs, org, new_accession())
    f = core.fhir()
    try:
        with f.repo.transaction(write=True) as tx:
            made = f.create("ServiceRequest", sr, tx)
            f.create("Appointment", {**appt, "basedOn": [{"reference": f"ServiceRequest/{made['id']}"}]}, tx)
    except FhirError as exc:
        return page("ticket.html", 400, form=request.form, errors={"form": core.error_text(exc)}, **kw)
    return core.back("console.detail.show", _("The scan ticket was created.") + f" ({sr['identifier'][0]['value']})",
                     pid=pid)


def blueprint() -> Blueprint:
    bp = Blueprint("tickets", __name__)
    bp.add_url_rule("/patients/<pid>/tickets/new", "new", new, methods=["GET", "POST"])
    return bp
