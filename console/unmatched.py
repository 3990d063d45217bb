"""Unmatched studies (reconciliation): studies whose PatientID matched no Patient wait on an
unreconciled Patient of the sending node's organization. Staff attach them to an existing patient
(the existing `$merge` of the unreconciled Patient into it: the ImagingStudies and the DICOM
index rows are repointed in one transaction, and the next scans with that PatientID follow the
merge), or make the unreconciled Patient a real one."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request

from console import core
from console.core import _, page
from console.detail import study_uid
from console.patient_form import validate
from console.pick import candidates, is_unreconciled
from fhirserver.errors import FhirError

UNRECONCILED = "http://fhirserver.local/CodeSystem/tags|unreconciled"


def unmatched() -> list[dict[str, Any]]:
    """Each waiting study with its unreconciled Patient (merged ones are done)."""
    f = core.fhir()
    pats = {p["id"]: p for p in f.search("Patient", [("_tag", UNRECONCILED), ("active:not", "false"),
                                                     ("_count", "200")])
            if not any(l.get("type") == "replaced-by" for l in p.get("link") or [])}
    if not pats:
        return []
    studies = f.search("ImagingStudy", [("subject", ",".join(f"Patient/{i}" for i in pats)), ("_count", "200")])
    out = []
    for s in studies:
        pid = core.ref_id(s.get("subject"), "Patient")
        if pid in pats:
            s["_uid"] = study_uid(s)
            out.append({"study": s, "patient": pats[pid]})
    return sorted(out, key=lambda x: x["study"].get("started") or "", reverse=True)


def index() -> Response:
    return page("unmatched.html", rows=unmatched())


def _row(sid: str) -> dict[str, Any]:
    s = core.fhir().read("ImagingStudy", sid)
    pid = core.ref_id((s or {}).get("subject"), "Patient")
    p = core.fhir().read("Patient", pid) if pid else None
    if s is None or p is None or not is_unreconciled(p):
        abort(404)
    s["_uid"] = study_uid(s)
    return {"study": s, "patient": p}


def _dicom_ids(p: dict[str, Any]) -> str:
    return ", ".join(i.get("value", "") for i in p.get("identifier") or [])


def attach(sid: str) -> Response:
    row = _row(sid)
    q = request.values.get("q", "")
    kw = dict(row=row, q=q, candidates=candidates(q, row["patient"]["id"]), dicom_ids=_dicom_ids(row["patient"]))
    if request.method == "GET":
        name = next(iter(row["patient"].get("name") or []), {})
        return page("attach_study.html", form={"first": " ".join(name.get("given") or []),
                                               "last": name.get("family", "")}, **kw)
    target = request.form.get("patient", "")
    if target not in {c["id"] for c in kw["candidates"]} and core.fhir().read("Patient", target) is None:
        return page("attach_study.html", 400, form=request.form, errors={"patient": _("Choose a patient.")}, **kw)
    try:
        core.fhir().op("Patient", None, "$merge", [("source-patient", {"reference": f"Patient/{row['patient']['id']}"}),
                                                  ("target-patient", {"reference": f"Patient/{target}"})])
    except FhirError as exc:
        return page("attach_study.html", 400, form=request.form, errors={"form": core.error_text(exc)}, **kw)
    return core.back("console.detail.show", _("The study was attached."), pid=target)


def make_patient(sid: str) -> Response:
    """The unreconciled Patient becomes a real one (names typed by staff, the DICOM identifiers
    kept so the next scans match it)."""
    row = _row(sid)
    p = row["patient"]
    v, errors = validate(request.form, _, alias=False)
    if not v["email"]:
        errors.pop("email", None)  # the patient may have none yet
    if errors:
        return page("attach_study.html", 400, row=row, q="", candidates=[], form=request.form, errors=errors,
                    dicom_ids=_dicom_ids(p))
    body = {**p, "name": [{"use": "official", "given": [v["first"]], "family": v["last"]}], "active": True}
    body = core.with_tags(body, [t for t in (p.get("meta") or {}).get("tag") or [] if t.get("code") != "unreconciled"])
    if v["email"]:
        body["telecom"] = [*(p.get("telecom") or []), {"system": "email", "value": v["email"]}]
    for key, field in (("birth", "birthDate"), ("gender", "gender")):
        if v[key]:
            body[field] = v[key]
    try:
        core.fhir().update("Patient", p["id"], body)
    except FhirError as exc:
        return page("attach_study.html", 400, row=row, q="", candidates=[], form=request.form,
                    errors={"form": core.error_text(exc)}, dicom_ids=_dicom_ids(p))
    return core.back("console.detail.show", _("The patient was created."), pid=p["id"])


def blueprint() -> Blueprint:
    bp = Blueprint("unmatched", __name__)
    bp.add_url_rule("/unmatched", "index", index, methods=["GET"])
    bp.add_url_rule("/unmatched/<sid>", "attach", attach, methods=["GET", "POST"])
    bp.add_url_rule("/unmatched/<sid>/new-patient", "make_patient", make_patient, methods=["POST"])
    return bp
