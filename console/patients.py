"""The patient list: the patients the staff member's policy shows (their organizations', and
those shared with them), filtered by visit time (Appointments), case type (scan tickets),
gender, and a name, email or phone; one search through the engine, keyset paging."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, request

from console import core
from console.core import page

PAGE_SIZE = 25
GENDERS = ("female", "male", "other", "unknown")
CASE_SYSTEM = "urn:fhirserver:console:case-type"
CASE_TYPES = (("orthodontics", "Orthodontics"), ("implant", "Implant"), ("restoration", "Restoration"),
              ("general", "General"))
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{3,}$")


def query_params(q: str) -> list[tuple[str, str]]:
    """What the search box means: an email, a phone number, or a name (prefix of any part)."""
    q = q.strip()[:100]
    if not q:
        return []
    if "@" in q:
        return [("email", q.lower())]
    if PHONE_RE.match(q):
        return [("phone", re.sub(r"[ ()-]", "", q))]
    return [("name", q)]


def search_params(args: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The FHIR search of the list's filters, and the filters as understood (for the form)."""
    form = {k: (args.get(k) or "").strip() for k in ("q", "gender", "from", "to", "case")}
    params = query_params(form["q"])
    if form["gender"] in GENDERS:
        params.append(("gender", form["gender"]))
    else:
        form["gender"] = ""
    for key, prefix in (("from", "ge"), ("to", "le")):
        if DATE_RE.match(form[key]):
            params.append(("_has:Appointment:patient:date", prefix + form[key]))
        else:
            form[key] = ""
    if form["case"] in dict(CASE_TYPES):
        params.append(("_has:ServiceRequest:patient:category", f"{CASE_SYSTEM}|{form['case']}"))
    else:
        form["case"] = ""
    return params, form


def contact(p: dict[str, Any], system: str) -> str:
    return next((t.get("value", "") for t in p.get("telecom") or [] if t.get("system") == system), "")


def index() -> Response:
    params, form = search_params(request.args)
    params += [("_count", str(PAGE_SIZE)), ("_total", "none")]  # a count over every patient costs a full scan
    after = request.args.get("after", "")
    if after:
        params.append(("_page_after", after[:500]))
    rows, nxt = core.fhir().page("Patient", params)
    next_args = None
    if nxt:
        next_args = {**{k: v for k, v in form.items() if v}, "after": nxt}
    return page("patients.html", patients=rows, form=form, next_args=next_args, genders=GENDERS,
                case_types=CASE_TYPES, contact=contact)


def blueprint() -> Blueprint:
    bp = Blueprint("patients", __name__)
    bp.add_url_rule("/patients", "index", index, methods=["GET"])
    return bp
