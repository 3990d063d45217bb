"""A new report from selected observations and images (seed 002's "Creating reports": pick data
of the patient, confirm, edit): a DiagnosticReport naming the chosen Observations as results
and the chosen ImagingStudies, with a title and conclusion, created with the staff member's
policy (each chosen item must be one the staff member may read, and the patient's)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, request

from console import core
from console.core import _, page
from console.detail import patient_or_404, study_uid
from fhirserver.errors import FhirError

STATUSES = ("preliminary", "final")


def _choices(pid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    f = core.fhir()
    obs = f.search("Observation", [("patient", f"Patient/{pid}"), ("_sort", "-date"), ("_count", "100")])
    studies = f.search("ImagingStudy", [("patient", f"Patient/{pid}"), ("_count", "100")])
    for s in studies:
        s["_uid"] = study_uid(s)
    return obs, studies


def new(pid: str) -> Response:
    p = patient_or_404(pid)
    obs, studies = _choices(pid)
    if request.method == "GET":
        return page("new_report.html", p=p, obs=obs, studies=studies, form={"status": "preliminary"})
    form = request.form
    chosen_obs = [o for o in form.getlist("observation") if o in {x["id"] for x in obs}]
    chosen_img = [s for s in form.getlist("study") if s in {x["id"] for x in studies}]
    title = (form.get("title") or "").strip()[:200]
    errors = {}
    if not title:
        errors["title"] = _("Enter a title.")
    if not (chosen_obs or chosen_img):
        errors["form"] = _("Choose at least one observation or image.")
    status = form.get("status") if form.get("status") in STATUSES else "preliminary"
    if errors:
        return page("new_report.html", 400, p=p, obs=obs, studies=studies, form=form, errors=errors,
                    chosen=set(chosen_obs) | set(chosen_img))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body: dict[str, Any] = {"resourceType": "DiagnosticReport", "status": status, "code": {"text": title},
                            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": now, "issued": now}
    if g.user.get("fhir_user"):
        body["performer"] = [{"reference": g.user["fhir_user"]}]
    if chosen_obs:
        body["result"] = [{"reference": f"Observation/{o}"} for o in chosen_obs]
    if chosen_img:
        body["imagingStudy"] = [{"reference": f"ImagingStudy/{s}"} for s in chosen_img]
    conclusion = (form.get("conclusion") or "").strip()[:4000]
    if conclusion:
        body["conclusion"] = conclusion
    try:
        rep = core.fhir().create("DiagnosticReport", body)
    except FhirError as exc:
        return page("new_report.html", 400, p=p, obs=obs, studies=studies, form=form,
                    errors={"form": core.error_text(exc)}, chosen=set(chosen_obs) | set(chosen_img))
    return core.back("console.detail.report", _("The report was created."), rid=rep["id"])


def blueprint() -> Blueprint:
    bp = Blueprint("new_report", __name__)
    bp.add_url_rule("/patients/<pid>/reports/new", "new", new, methods=["GET", "POST"])
    return bp
