"""The console's form logic without HTTP: what the search box means, the patient form's
validation and the Patient it makes, and back."""
from __future__ import annotations

from datetime import date

from console.patient_form import age, form_of, patient_body, validate
from console.patients import query_params, search_params


def _(s: str) -> str:
    return s


def test_search_box_means_email_phone_or_name():
    assert query_params("Ana@Example.org ") == [("email", "ana@example.org")]
    assert query_params("+34 600 111 222") == [("phone", "+34600111222")]
    assert query_params("Torres") == [("name", "Torres")]
    assert query_params("  ") == []


def test_filters_ignore_what_is_not_a_filter():
    params, form = search_params({"gender": "robot", "from": "2024-13", "to": "2024-02-01", "case": "implant"})
    assert ("gender", "robot") not in params and form["gender"] == "" and form["from"] == ""
    assert ("_has:Appointment:patient:date", "le2024-02-01") in params
    assert ("_has:ServiceRequest:patient:category", "urn:fhirserver:console:case-type|implant") in params


def test_required_fields_unless_alias():
    v, errors = validate({"first": " Ana ", "email": "x"}, _)
    assert v["first"] == "Ana" and set(errors) == {"last", "email"}
    assert validate({}, _, alias=True)[1] == {}
    assert "birth" in validate({"first": "a", "last": "b", "email": "a@b.co", "birth": "2999-01-01"}, _)[1]


def test_patient_body_round_trip():
    v, errors = validate({"first": "Ana", "last": "Torres", "email": "ANA@x.org", "mobile": "+34600000001",
                          "landline": "+34910000000", "idnumber": "X1", "insurance": "I2", "address": "Calle 1",
                          "note": "n", "birth": "1985-04-12", "gender": "female"}, _)
    assert not errors
    body = patient_body(v, "org-1")
    assert body["managingOrganization"] == {"reference": "Organization/org-1"}
    assert form_of(body) == v
    alias = patient_body(validate({}, _, alias=True)[0], "org-1", alias="ALIAS-ABC123")
    assert alias["name"] == [{"use": "anonymous", "text": "ALIAS-ABC123"}] and "telecom" not in alias
    kept = patient_body({**v, "note": ""}, None, base={**body, "photo": [{"data": "AA=="}]})
    assert kept["photo"] and "extension" not in kept


def test_age():
    assert age("2000-06-15", date(2024, 6, 14)) == 23 and age("2000-06-15", date(2024, 6, 15)) == 24
    assert age(None) is None and age("2000") is None
