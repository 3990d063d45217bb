"""Merge duplicates into the patient on screen: find similar patients by name or contact, pick
several, "Preview" (the existing `$merge` with preview=true for each: exactly what would move),
then "Confirm merge" runs `$merge` for each in one transaction. The confirmation carries a digest
of the preview: if what would move changed in between, nothing is merged and the new preview is
shown."""
from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, request

from console import core
from console.core import _, page
from console.detail import describe, patient_or_404
from console.patients import contact, query_params
from fhirserver.errors import FhirError

MAX_SOURCES = 20


def similar(p: dict[str, Any], q: str) -> list[dict[str, Any]]:
    """Candidates: by the query typed, else by the patient's family name, email and phone."""
    f = core.fhir()
    searches = [query_params(q)] if q.strip() else []
    if not searches:
        fam = next((n.get("family") for n in p.get("name") or [] if n.get("family")), "")
        if fam:
            searches.append([("family", fam)])
        for system, param in (("email", "email"), ("phone", "phone")):
            val = contact(p, system)
            if val:
                searches.append([(param, val)])
    seen: dict[str, dict[str, Any]] = {}
    for params in searches:
        for r in f.search("Patient", params + [("_count", "50")]):
            merged = any(l.get("type") == "replaced-by" for l in r.get("link") or [])
            if r["id"] != p["id"] and not merged:
                seen.setdefault(r["id"], r)
    return list(seen.values())


def _moves(target: str, sources: list[str], tx: Any = None) -> list[tuple[str, list[str]]]:
    """What `$merge` would move from each source (its own preview)."""
    f = core.fhir()
    out = []
    for s in sources:
        res = core.out_params(f.op("Patient", None, "$merge", [
            ("source-patient", {"reference": f"Patient/{s}"}), ("target-patient", {"reference": f"Patient/{target}"}),
            ("preview", True)], tx))
        out.append((s, sorted(r.get("reference", "") for r in res.get("moved") or [] if isinstance(r, dict))))
    return out


def digest(moves: list[tuple[str, list[str]]]) -> str:
    return hashlib.sha256(repr(moves).encode()).hexdigest()[:32]


def _sources(pid: str) -> list[str]:
    return [s for s in dict.fromkeys(request.values.getlist("source")) if s and s != pid][:MAX_SOURCES]


def index(pid: str) -> Response:
    p = patient_or_404(pid)
    q = request.args.get("q", "")
    return page("merge.html", p=p, q=q, candidates=similar(p, q), picked=set(_sources(pid)), contact=contact)


def preview(pid: str) -> Response:
    p = patient_or_404(pid)
    sources = _sources(pid)
    if not sources:
        return page("merge.html", 400, p=p, q="", candidates=similar(p, ""), picked=set(), contact=contact,
                    errors={"form": _("Choose at least one patient to merge.")})
    f = core.fhir()
    names = {s: core.display_name(f.read("Patient", s)) for s in sources}
    try:
        moves = _moves(pid, sources)
    except FhirError as exc:
        return page("merge.html", 400, p=p, q="", candidates=similar(p, ""), picked=set(sources), contact=contact,
                    errors={"form": core.error_text(exc)})
    return page("merge_preview.html", p=p, moves=moves, names=names, digest=digest(moves), describe=describe)


def confirm(pid: str) -> Response:
    p = patient_or_404(pid)
    sources = _sources(pid)
    if not sources:
        return core.back("console.merge.index", _("Choose at least one patient to merge."), pid=pid)
    f = core.fhir()

    class Changed(Exception):
        pass

    try:
        with f.repo.transaction(write=True) as tx:
            moves = _moves(pid, sources, tx)
            if digest(moves) != request.form.get("digest"):
                raise Changed()
            for s in sources:
                f.op("Patient", None, "$merge", [("source-patient", {"reference": f"Patient/{s}"}),
                                                 ("target-patient", {"reference": f"Patient/{pid}"})], tx)
    except Changed:
        names = {s: core.display_name(f.read("Patient", s)) for s in sources}
        moves = _moves(pid, sources)
        return page("merge_preview.html", 409, p=p, moves=moves, names=names, digest=digest(moves), describe=describe,
                    errors={"form": _("The data changed since the preview: check the preview again.")})
    except FhirError as exc:
        return core.back("console.merge.index", core.error_text(exc), pid=pid)
    return core.back("console.detail.show", _("The patients were merged."), pid=pid)


def blueprint() -> Blueprint:
    bp = Blueprint("merge", __name__)
    bp.add_url_rule("/patients/<pid>/merge", "index", index, methods=["GET"])
    bp.add_url_rule("/patients/<pid>/merge/preview", "preview", preview, methods=["POST"])
    bp.add_url_rule("/patients/<pid>/merge/confirm", "confirm", confirm, methods=["POST"])
    return bp
