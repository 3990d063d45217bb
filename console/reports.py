"""Reports: reports filed without a patient (named by keywords, as staff do when the patient has
no profile yet) found by those keywords and attached to a patient by setting their subject."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request

from console import core
from console.core import _, page
from console.pick import candidates
from fhirserver.errors import FhirError
from fhirserver.operations import concept_text


def _text_of(r: dict[str, Any]) -> str:
    parts = [concept_text(r.get("code")), r.get("conclusion") or "",
             *(concept_text(c) for c in r.get("category") or []),
             *(i.get("value", "") for i in r.get("identifier") or []),
             *(concept_text(c) for c in r.get("conclusionCode") or [])]
    return " ".join(p for p in parts if p).lower()


def unassigned(keywords: str) -> list[dict[str, Any]]:
    """Reports without a subject that the staff member may see, matching every keyword."""
    rows = core.fhir().search("DiagnosticReport", [("subject:missing", "true"), ("_count", "200")])
    words = [w for w in keywords.lower().split() if w][:10]
    return [r for r in rows if all(w in _text_of(r) for w in words)]


def index() -> Response:
    kw = request.args.get("keywords", "").strip()[:200]
    return page("reports.html", reports=unassigned(kw), keywords=kw)


def attach(rid: str) -> Response:
    rep = core.fhir().read("DiagnosticReport", rid)
    if rep is None or rep.get("subject"):
        abort(404)
    q = request.values.get("q", "")
    kw = dict(rep=rep, q=q, candidates=candidates(q))
    if request.method == "GET":
        return page("attach_report.html", **kw)
    target = request.form.get("patient", "")
    if not target or core.fhir().read("Patient", target) is None:
        return page("attach_report.html", 400, errors={"patient": _("Choose a patient.")}, **kw)
    try:
        core.fhir().update("DiagnosticReport", rid, {**rep, "subject": {"reference": f"Patient/{target}"}})
    except FhirError as exc:
        return page("attach_report.html", 400, errors={"form": core.error_text(exc)}, **kw)
    return core.back("console.detail.show", _("The report was attached."), pid=target)


def blueprint() -> Blueprint:
    bp = Blueprint("reports", __name__)
    bp.add_url_rule("/reports", "index", index, methods=["GET"])
    bp.add_url_rule("/reports/<rid>/attach", "attach", attach, methods=["GET", "POST"])
    return bp
