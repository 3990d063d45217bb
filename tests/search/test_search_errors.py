"""Search input a server must not guess at: malformed values and unsupported modifiers of known
parameters answer 400 naming the parameter (in both handling modes); unknown parameters are
dropped with a warning entry and left out of the self link, or refused under handling=strict."""
from __future__ import annotations

import json

import pytest

from tests.conftest import fhir_json

JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture()
def one_patient(client):  # noqa: ANN001, ANN201
    body = {"resourceType": "Patient", "id": "e1", "gender": "female", "birthDate": "1980-05-17"}
    assert client.put("/fhir/Patient/e1", data=json.dumps(body), headers=JSON).status_code in (200, 201)
    return client


@pytest.mark.parametrize("query, name", [
    ("Patient?birthdate=1985-13-45", "birthdate"),                 # date
    ("RiskAssessment?probability=abc", "probability"),             # number
    ("RiskAssessment?probability=1e99999", "probability"),         # number out of range
    ("Observation?value-quantity=abc", "value-quantity"),          # quantity
    ("Observation?value-quantity=5|x", "value-quantity"),          # quantity with two parts
    ("Patient?gender=a|b|c", "gender"),                            # token with two bars
    ("Patient?identifier=|", "identifier"),                        # token without system or code
    ("Observation?subject=Patient/", "subject"),                   # reference without id
    ("Observation?subject=Patient/a/b/c/d", "subject"),            # reference with extra segments
    ("Observation?subject=a b", "subject"),                        # not an id
    ("Patient?name:sounds-like=x", "name"),                        # unknown modifier (string)
    ("Patient?gender:below=x", "gender"),                          # modifier needing terminology
    ("Patient?birthdate:exact=1980", "birthdate"),                 # unknown modifier (date)
    ("Patient?_id:contains=e", "_id"),                             # unknown modifier (_id)
    ("Patient?active:missing=maybe", "active"),                    # :missing takes true|false
    ("Patient?_sort=nosuch", "_sort"),                             # _sort by an unknown parameter
    ("Patient?_sort=-", "_sort"),                                  # _sort without a parameter
    ("Patient?_sort=name,,gender", "_sort"),                       # _sort with an empty item
    ("Patient?_count=abc", "_count"),
    ("Patient?_count=-1", "_count"),
    ("Patient?_count=1.5", "_count"),
])
@pytest.mark.parametrize("prefer", ["", "handling=lenient", "handling=strict"])
def test_malformed_values_are_400_naming_the_parameter(one_patient, query, name, prefer) -> None:  # noqa: ANN001
    assert one_patient.get("/fhir/Patient?birthdate=1980-05-17").status_code == 200  # the well-formed one works
    r = one_patient.get(f"/fhir/{query}", headers={"Prefer": prefer} if prefer else {})
    assert r.status_code == 400, (query, r.data)
    body = fhir_json(r)
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(i.get("diagnostics", "") for i in body["issue"])
    assert name in text, (query, text)
    assert body["issue"][0]["severity"] == "error"


def test_unknown_parameter_ignored_with_warning_and_left_out_of_self_link(one_patient) -> None:  # noqa: ANN001
    r = one_patient.get("/fhir/Patient?gender=female&nosuch=1&_count=10")
    assert r.status_code == 200
    bundle = fhir_json(r)
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["resource"]["id"] for e in matches] == ["e1"]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    issue = outcomes[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and "nosuch" in issue["diagnostics"]
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "nosuch" not in self_link and "gender=female" in self_link


def test_unknown_parameter_refused_under_strict_handling(one_patient) -> None:  # noqa: ANN001
    r = one_patient.get("/fhir/Patient?gender=female&nosuch=1", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    body = fhir_json(r)
    assert "nosuch" in body["issue"][0]["diagnostics"]


def test_well_formed_edge_values_still_search(one_patient) -> None:  # noqa: ANN001
    for query in ("Patient?identifier=urn:mrn|", "Patient?identifier=|A-1", "Patient?gender=female",
                  "Observation?subject=e1", "Observation?subject=Patient/e1",
                  "Observation?subject=http://elsewhere.example/fhir/Patient/1",
                  "Patient?_sort=-birthdate,name", "Patient?_count=0"):
        assert one_patient.get(f"/fhir/{query}").status_code == 200, query
