"""New patient: required first name, last name and email (errors keep what was typed), or an
alias without personal data; an email already on the platform is refused without saying whose
(`$find-by-email`), with an access request offered instead (`$request-access`); the optional
invitation (`$invite`, confirmed with the staff member's own password) runs in the same
transaction as the create, so a refused invitation creates nothing."""
from __future__ import annotations

from flask import Blueprint, Response, g, redirect, request, url_for

from console import core
from console.core import _, page
from console.patient_form import GENDERS, alias_code, patient_body, validate
from fhirserver.errors import FhirError


def _orgs() -> list[tuple[str, str]]:
    f = core.fhir()
    out = []
    for oid in g.user["organizations"]:
        org = f.read("Organization", oid)
        out.append((oid, (org or {}).get("name") or oid))
    return out


def _form_page(status: int = 200, **kw: object) -> Response:
    return page("new_patient.html", status, genders=GENDERS, orgs=_orgs(), **kw)


def email_exists(email: str) -> bool:
    """Whether the email is anyone's on the platform (the answer names nobody)."""
    out = core.out_params(core.fhir().op("Patient", None, "$find-by-email", [("email", email)]))
    return bool((out.get("exists") or [False])[0])


def new() -> Response:
    if request.method == "GET":
        return _form_page()
    from smart_auth import verify_hash

    form = request.form
    alias = form.get("alias") == "on"
    invite = form.get("invite") == "on" and not alias
    v, errors = validate(form, _, alias)
    orgs = [o for o, _n in _orgs()]
    org = form.get("organization") or (orgs[0] if orgs else "")
    if org not in orgs:
        errors["organization"] = _("Choose an organization.")
    if invite and not verify_hash(g.user["password_hash"], form.get("password", "")):
        errors["password"] = _("Enter your password to confirm the invitation.")
    exists = False
    if not errors.get("email") and v["email"]:
        exists = email_exists(v["email"])
        if exists:
            errors["email"] = _("A patient with this email already exists on the platform. "
                                "Request access to the profile instead of creating a new one.")
    if errors:
        return _form_page(400, form=form, errors=errors, exists=exists)
    body = patient_body(v, org, alias=alias_code() if alias else None)
    f = core.fhir()
    try:
        with f.repo.transaction(write=True) as tx:
            created = f.create("Patient", body, tx)
            if invite:
                f.op("Patient", created["id"], "$invite", [("password", form.get("password", ""))], tx)
    except FhirError as exc:
        return _form_page(exc.status if 400 <= exc.status < 500 else 400, form=form,
                          errors={"form": core.error_text(exc)})
    msg = _("The patient was created.") + (" " + _("The invitation was sent.") if invite else "")
    if form.get("ticket") == "on":
        return core.back("console.tickets.new", msg, pid=created["id"])
    return core.back("console.detail.show", msg, pid=created["id"])


def request_access() -> Response:
    """Staff of this organization ask the profile's patient (or get it at once when the patient
    lets every clinician see their imaging); the page never learns who it is."""
    email = (request.form.get("email") or "").strip().lower()
    try:
        core.fhir().op("Patient", None, "$request-access", [("email", email)])
    except FhirError as exc:
        return _form_page(exc.status if 400 <= exc.status < 500 else 400, form=request.form,
                          errors={"form": core.error_text(exc)})
    return core.back("console.patients.index", _("The access request was sent."))


def blueprint() -> Blueprint:
    bp = Blueprint("new_patient", __name__)
    bp.add_url_rule("/patients/new", "new", new, methods=["GET", "POST"])
    bp.add_url_rule("/patients/request-access", "request_access", request_access, methods=["POST"])
    return bp
