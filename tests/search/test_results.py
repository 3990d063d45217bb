"""_include/_revinclude, _sort with paging, compartments, custom parameters, the seeds' searches."""
from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import pytest

from tests.conftest import fhir_json
from tests.search.search_helpers import JSON, put, search


def follow(client, url: str) -> dict:  # noqa: ANN001
    parts = urlsplit(url)
    return fhir_json(client.get(parts.path + "?" + parts.query))


def link(bundle: dict, rel: str) -> str | None:
    return next((l["url"] for l in bundle["link"] if l["relation"] == rel), None)


def by_mode(bundle: dict, mode: str) -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}"
                  for e in bundle.get("entry", []) if e["search"]["mode"] == mode)


@pytest.fixture()
def reports(client):  # noqa: ANN001, ANN201
    put(client, {"resourceType": "Organization", "id": "lab", "name": "Lab"})
    put(client, {"resourceType": "Patient", "id": "pa", "name": [{"family": "Alpha"}], "managingOrganization": {"reference": "Organization/lab"}})
    put(client, {"resourceType": "Patient", "id": "pb", "name": [{"family": "Beta"}]})
    for i, pid in enumerate(["pa", "pa", "pb"]):
        put(client, {"resourceType": "Observation", "id": f"ob{i}", "status": "final", "code": {"text": "x"},
                     "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": i}})
    put(client, {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "code": {"text": "panel"},
                 "subject": {"reference": "Patient/pa"}, "result": [{"reference": "Observation/ob0"}, {"reference": "Observation/ob1"}]})
    put(client, {"resourceType": "Provenance", "id": "prov1", "recorded": "2024-01-01T00:00:00Z",
                 "target": [{"reference": "DiagnosticReport/dr1"}], "agent": [{"who": {"reference": "Organization/lab"}}]})
    return client


def test_include(reports) -> None:  # noqa: ANN001
    b = search(reports, "DiagnosticReport?subject=Patient/pa&_include=DiagnosticReport:result")
    assert by_mode(b, "match") == ["DiagnosticReport/dr1"]
    assert by_mode(b, "include") == ["Observation/ob0", "Observation/ob1"]
    assert b["total"] == 1   # includes do not count
    b = search(reports, "DiagnosticReport?_include=DiagnosticReport:subject:Patient")
    assert by_mode(b, "include") == ["Patient/pa"]
    b = search(reports, "DiagnosticReport?_include=*")
    assert by_mode(b, "include") == ["Observation/ob0", "Observation/ob1", "Patient/pa"]


def test_include_iterate(reports) -> None:  # noqa: ANN001
    b = search(reports, "DiagnosticReport?_include=DiagnosticReport:subject&_include:iterate=Patient:organization")
    assert by_mode(b, "include") == ["Organization/lab", "Patient/pa"]
    b = search(reports, "DiagnosticReport?_include=DiagnosticReport:subject&_include=Patient:organization")
    assert by_mode(b, "include") == ["Patient/pa"]   # without :iterate, only from the matches


def test_revinclude(reports) -> None:  # noqa: ANN001
    b = search(reports, "Patient?_id=pa&_revinclude=Observation:subject")
    assert by_mode(b, "include") == ["Observation/ob0", "Observation/ob1"]
    b = search(reports, "Patient?_id=pa&_revinclude=DiagnosticReport:subject&_revinclude:iterate=Provenance:target")
    assert by_mode(b, "include") == ["DiagnosticReport/dr1", "Provenance/prov1"]
    link_self = link(b, "self")
    assert "_revinclude" in link_self


def test_compartment_search(reports) -> None:  # noqa: ANN001
    b = search(reports, "Patient/pa/Observation")
    assert by_mode(b, "match") == ["Observation/ob0", "Observation/ob1"]
    b = search(reports, "Patient/pa/Observation?value-quantity=1")
    assert by_mode(b, "match") == ["Observation/ob1"]
    b = search(reports, "Patient/pa/*")
    assert by_mode(b, "match") == ["DiagnosticReport/dr1", "Observation/ob0", "Observation/ob1", "Patient/pa"]
    assert reports.get("/fhir/Patient/pa/Organization").status_code == 400  # not in the compartment
    assert search(reports, "Patient/nobody/Observation")["total"] == 0


def test_sort_and_paging_with_sort(client) -> None:  # noqa: ANN001
    names = ["delta", "alpha", "charlie", "bravo", "echo", "alpha"]
    for i, n in enumerate(names):
        put(client, {"resourceType": "Patient", "id": f"s{i}", "name": [{"family": n}], "birthDate": f"19{80 + i}-01-01"})
    put(client, {"resourceType": "Patient", "id": "nameless"})
    b = search(client, "Patient?_sort=family,-birthdate&_count=3")
    seen = [e["resource"]["id"] for e in b["entry"]]
    while link(b, "next"):
        b = follow(client, link(b, "next"))
        seen += [e["resource"]["id"] for e in b["entry"]]
    assert seen == ["s5", "s1", "s3", "s2", "s0", "s4", "nameless"]   # missing values last
    back = follow(client, link(b, "previous"))
    assert [e["resource"]["id"] for e in back["entry"]] == ["s2", "s0", "s4"]
    b = search(client, "Patient?_sort=-birthdate&_count=2")
    assert [e["resource"]["id"] for e in b["entry"]] == ["s5", "s4"]
    b = search(client, "Patient?_sort=-_id&_count=2")
    assert [e["resource"]["id"] for e in b["entry"]] == ["s5", "s4"]


def test_paging_under_concurrent_inserts(client) -> None:  # noqa: ANN001
    for i in range(30):
        put(client, {"resourceType": "Patient", "id": f"c{i:02d}", "gender": "other"})
    app = client.application
    stop = threading.Event()

    def writer() -> None:
        c = app.test_client()
        n = 0
        while not stop.is_set() and n < 200:
            c.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "gender": "unknown"}), headers=JSON)
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        b = search(client, "Patient?gender=other&_count=7")
        seen = [e["resource"]["id"] for e in b["entry"]]
        while link(b, "next"):
            b = follow(client, link(b, "next"))
            seen += [e["resource"]["id"] for e in b["entry"]]
    finally:
        stop.set()
        t.join()
    assert seen == [f"c{i:02d}" for i in range(30)]


def test_custom_search_parameter_after_reindex(client) -> None:  # noqa: ANN001
    put(client, {"resourceType": "Patient", "id": "n1", "name": [{"family": "X", "suffix": ["PhD"]}]})
    sp = {"resourceType": "SearchParameter", "id": "patient-suffix", "url": "http://example.org/sp/suffix",
          "name": "suffix", "status": "active", "description": "Name suffix", "code": "suffix",
          "base": ["Patient"], "type": "string", "expression": "Patient.name.suffix"}
    put(client, sp)
    strict = client.get("/fhir/Patient?suffix=phd", headers={"Prefer": "handling=strict"})
    r = client.post("/fhir/$reindex", data="", headers=JSON)
    assert r.status_code == 200, r.data
    assert fhir_json(r)["parameter"][0]["valueInteger"] >= 2
    assert [e["resource"]["id"] for e in search(client, "Patient?suffix=phd")["entry"]] == ["n1"]
    assert strict.status_code in (200, 400)


def test_capability_lists_search_parameters(client) -> None:  # noqa: ANN001
    cs = fhir_json(client.get("/fhir/metadata"))
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient["searchParam"]}
    assert {"name", "family", "email", "phone", "telecom", "birthdate", "identifier", "gender",
            "general-practitioner", "_id", "_lastUpdated", "_tag", "_content"} <= names
    obs = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Observation")
    assert "code-value-quantity" in {p["name"] for p in obs["searchParam"]}


class TestSeedSearches:
    """The clinic workflows of the seed documents."""

    @pytest.fixture()
    def clinic(self, client):  # noqa: ANN001, ANN201
        put(client, {"resourceType": "Patient", "id": "ana", "gender": "female", "name": [{"family": "García", "given": ["Ana"]}],
                     "telecom": [{"system": "email", "value": "ana@example.com"}, {"system": "phone", "value": "600123123"}]})
        put(client, {"resourceType": "Patient", "id": "luis", "gender": "male", "name": [{"family": "Pérez", "given": ["Luis"]}],
                     "telecom": [{"system": "email", "value": "luis@example.com"}]})
        put(client, {"resourceType": "Appointment", "id": "ap1", "status": "booked", "start": "2026-11-20T09:00:00Z",
                     "end": "2026-11-20T09:30:00Z", "participant": [{"actor": {"reference": "Patient/ana"}, "status": "accepted"}]})
        put(client, {"resourceType": "Appointment", "id": "ap2", "status": "booked", "start": "2025-01-10T09:00:00Z",
                     "end": "2025-01-10T09:30:00Z", "participant": [{"actor": {"reference": "Patient/luis"}, "status": "accepted"}]})
        put(client, {"resourceType": "DiagnosticReport", "id": "orphan", "status": "final", "code": {"text": "Intraoral scan"},
                     "conclusion": "Fractured molar, upper left"})
        return client

    def test_patients_by_visit_time(self, clinic) -> None:  # noqa: ANN001
        b = search(clinic, "Patient?_has:Appointment:patient:date=ge2026-01-01")
        assert by_mode(b, "match") == ["Patient/ana"]

    def test_patients_by_gender_name_contact(self, clinic) -> None:  # noqa: ANN001
        assert by_mode(search(clinic, "Patient?gender=male"), "match") == ["Patient/luis"]
        assert by_mode(search(clinic, "Patient?name=garcia"), "match") == ["Patient/ana"]
        assert by_mode(search(clinic, "Patient?phone=600123123"), "match") == ["Patient/ana"]
        assert by_mode(search(clinic, "Patient?telecom=luis@example.com"), "match") == ["Patient/luis"]

    def test_existing_patient_by_email(self, clinic) -> None:  # noqa: ANN001
        assert search(clinic, "Patient?email=ANA@example.com&_summary=count")["total"] == 1
        assert search(clinic, "Patient?email=nobody@example.com&_summary=count")["total"] == 0

    def test_reports_without_patient_found_by_keywords(self, clinic) -> None:  # noqa: ANN001
        b = search(clinic, "DiagnosticReport?subject:missing=true&_content=fractured molar")
        assert by_mode(b, "match") == ["DiagnosticReport/orphan"]
