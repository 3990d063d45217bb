"""Access requests on the patient's page: other organizations asking to see this patient
(`$access-requests`), answered with `$respond-access`. The access rules decide who answers: the
patient once they own their profile (then the page says so), otherwise the managing
organization's staff."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request

from console import core
from console.core import _, patient_or_404
from fhirserver.errors import FhirError


def pending(pid: str) -> tuple[list[dict[str, Any]], bool]:
    """The pending requests, each with the asking organization's name, and whether this staff
    member may answer them."""
    f = core.fhir()
    try:
        out = f.op("Patient", pid, "$access-requests")
    except FhirError as exc:
        if exc.status == 403:
            return [], False
        raise
    rows = []
    for prm in out.get("parameter") or []:
        parts = {x.get("name"): next((v for k, v in x.items() if k.startswith("value")), None)
                 for x in prm.get("part") or []}
        oid = core.ref_id(parts.get("organization"), "Organization")
        org = f.read("Organization", oid) if oid else None
        rows.append({"id": parts.get("id"), "org": (org or {}).get("name") or oid or "",
                     "scope": parts.get("scope") or ""})
    return rows, True


def answer(pid: str, rq: str) -> Response:
    patient_or_404(pid)
    decision = request.form.get("decision")
    if decision not in ("accept", "reject"):
        abort(400)
    try:
        core.fhir().op("Patient", pid, "$respond-access", [("request", rq), ("decision", decision)])
    except FhirError as exc:
        if exc.status == 404:
            abort(404)
        return core.back("console.detail.show", core.error_text(exc), pid=pid)
    msg = _("The access request was accepted.") if decision == "accept" else _("The access request was rejected.")
    return core.back("console.detail.show", msg, pid=pid)


def blueprint() -> Blueprint:
    bp = Blueprint("access_requests", __name__)
    bp.add_url_rule("/patients/<pid>/access-requests/<rq>", "answer", answer, methods=["POST"])
    return bp
