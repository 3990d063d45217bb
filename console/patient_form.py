"""Patient form logic shared by "New patient" and "Edit patient": validation (errors keyed by
field, the typed values kept) and the FHIR Patient body, the seed's demographics included."""
from __future__ import annotations

import re
import secrets
from datetime import date
from typing import Any, Callable

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{5,19}$")
GENDERS = ("female", "male", "other", "unknown")
ID_SYSTEM = "urn:fhirserver:console:id-number"
INSURANCE_SYSTEM = "urn:fhirserver:console:insurance-card"
ALIAS_SYSTEM = "urn:fhirserver:console:alias"
ALIAS_TAG = {"system": "http://fhirserver.local/CodeSystem/tags", "code": "alias", "display": "Alias profile"}
FIELDS = ("first", "last", "email", "birth", "gender", "mobile", "landline", "idnumber", "insurance",
          "address", "note")


def _valid_date(s: str) -> bool:
    if not DATE_RE.match(s):
        return False
    try:
        return date.fromisoformat(s) <= date.today()
    except ValueError:
        return False


def validate(form: Any, _: Callable[[str], str], alias: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """The cleaned values and the errors; an alias needs no personal data at all."""
    v = {k: (form.get(k) or "").strip()[:200] for k in FIELDS}
    v["email"] = v["email"].lower()
    errors: dict[str, str] = {}
    if not alias:
        if not v["first"]:
            errors["first"] = _("Enter a first name.")
        if not v["last"]:
            errors["last"] = _("Enter a last name.")
        if not EMAIL_RE.match(v["email"]):
            errors["email"] = _("Enter a valid email address.")
    elif v["email"] and not EMAIL_RE.match(v["email"]):
        errors["email"] = _("Enter a valid email address.")
    if v["birth"] and not _valid_date(v["birth"]):
        errors["birth"] = _("Enter a date (YYYY-MM-DD).")
    if v["gender"] and v["gender"] not in GENDERS:
        errors["gender"] = _("Choose a gender.")
    for k in ("mobile", "landline"):
        if v[k] and not PHONE_RE.match(v[k]):
            errors[k] = _("Enter a valid mobile number (digits, optionally starting with +).")
    return v, errors


def alias_code() -> str:
    return "ALIAS-" + secrets.token_hex(3).upper()


def patient_body(v: dict[str, str], organization: str | None, alias: str | None = None,
                 base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Patient from the form's values; `base` (an existing Patient) keeps what the form does not
    edit (identifiers of other systems, links, photo...)."""
    body: dict[str, Any] = dict(base or {"resourceType": "Patient", "active": True})
    if alias:
        body["name"] = [{"use": "anonymous", "text": alias}]
        body["meta"] = {"tag": [ALIAS_TAG]}
    elif v["first"] or v["last"]:
        body["name"] = [{"use": "official", "given": [v["first"]] if v["first"] else [], "family": v["last"]}]
        body["name"][0] = {k: x for k, x in body["name"][0].items() if x}
    telecom = [t for t in body.get("telecom") or [] if t.get("system") not in ("email", "phone")]
    if v["email"]:
        telecom.append({"system": "email", "value": v["email"]})
    if v["mobile"]:
        telecom.append({"system": "phone", "use": "mobile", "value": v["mobile"]})
    if v["landline"]:
        telecom.append({"system": "phone", "use": "home", "value": v["landline"]})
    body["telecom"] = telecom
    idents = [i for i in body.get("identifier") or [] if i.get("system") not in (ID_SYSTEM, INSURANCE_SYSTEM)]
    if alias:
        idents.append({"system": ALIAS_SYSTEM, "value": alias})
    if v["idnumber"]:
        idents.append({"system": ID_SYSTEM, "value": v["idnumber"],
                       "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}],
                                "text": "ID number"}})
    if v["insurance"]:
        idents.append({"system": INSURANCE_SYSTEM, "value": v["insurance"],
                       "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SN"}],
                                "text": "Medical insurance card number"}})
    body["identifier"] = idents
    body["address"] = [{"text": v["address"]}] if v["address"] else []
    for key, field in (("gender", "gender"), ("birth", "birthDate")):
        if v[key]:
            body[field] = v[key]
        else:
            body.pop(field, None)
    notes = [e for e in body.get("extension") or [] if e.get("url") != NOTE_URL]
    if v["note"]:
        notes.append({"url": NOTE_URL, "valueString": v["note"]})
    body["extension"] = notes
    if organization and not body.get("managingOrganization"):
        body["managingOrganization"] = {"reference": f"Organization/{organization}"}
    return {k: x for k, x in body.items() if x not in ([], None, "")}


NOTE_URL = "http://fhirserver.local/StructureDefinition/patient-note"


def form_of(p: dict[str, Any]) -> dict[str, str]:
    """The form's values of a stored Patient (the Edit form starts from them)."""
    name = next(iter(p.get("name") or []), {})
    tel = p.get("telecom") or []
    ident = {i.get("system"): i.get("value", "") for i in p.get("identifier") or []}
    return {"first": " ".join(name.get("given") or []), "last": name.get("family", ""),
            "email": next((t.get("value", "") for t in tel if t.get("system") == "email"), ""),
            "mobile": next((t.get("value", "") for t in tel if t.get("system") == "phone" and t.get("use") == "mobile"), ""),
            "landline": next((t.get("value", "") for t in tel if t.get("system") == "phone" and t.get("use") != "mobile"), ""),
            "birth": p.get("birthDate", ""), "gender": p.get("gender", ""),
            "idnumber": ident.get(ID_SYSTEM, ""), "insurance": ident.get(INSURANCE_SYSTEM, ""),
            "address": next((a.get("text") or ", ".join(a.get("line") or []) for a in p.get("address") or []), ""),
            "note": next((e.get("valueString", "") for e in p.get("extension") or [] if e.get("url") == NOTE_URL), "")}


def age(birth: str | None, today: date | None = None) -> int | None:
    if not birth or len(birth) < 10:
        return None
    try:
        b = date.fromisoformat(birth[:10])
    except ValueError:
        return None
    t = today or date.today()
    return t.year - b.year - ((t.month, t.day) < (b.month, b.day))


def is_alias(p: dict[str, Any]) -> bool:
    return any(t.get("code") == "alias" and t.get("system") == ALIAS_TAG["system"]
               for t in (p.get("meta") or {}).get("tag") or [])
