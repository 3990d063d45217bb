"""Type-level searches answered before Flask (fhirserver.api.lean) say exactly what the full path
says; output parameters, Prefer and every error still come from the full path."""
from __future__ import annotations

import pytest

FHIR = {"Content-Type": "application/fhir+json"}
FULL = {"Prefer": "handling=lenient"}  # the server's default handling: a Prefer takes the full path


def _headers(r) -> dict[str, str]:  # noqa: ANN001
    return {k: v for k, v in r.headers.items() if k != "X-Request-ID"}


@pytest.fixture()
def clinic(client):  # noqa: ANN001, ANN201
    ids = []
    for i, family in enumerate(["Lean", "Lean", "Leaner", "Other"]):
        ids.append(client.post("/fhir/Patient", json={
            "resourceType": "Patient", "name": [{"family": family, "given": [f"G{i}"]}],
            "identifier": [{"system": "urn:mrn", "value": f"MRN-{i}"}], "birthDate": f"198{i}-05-01"},
            headers=FHIR).json["id"])
    obs = client.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                                                                              "code": "1234-5"}]},
        "subject": {"reference": f"Patient/{ids[0]}"}}, headers=FHIR).json["id"]
    return ids, obs


SEARCHES = [
    "/fhir/Patient?family=Lean",
    "/fhir/Patient?identifier=urn:mrn|MRN-2",
    "/fhir/Patient?family=Lean&_count=1",
    "/fhir/Patient?_sort=-birthdate&_count=2",
    "/fhir/Patient?birthdate=ge1981-01-01&_total=none",
    "/fhir/Patient?name:contains=ean",
    "/fhir/Patient?nonsense=1",  # lenient: ignored, with a warning entry
    "/fhir/Patient",
    "/fhir/Observation?code=http://loinc.org|1234-5&_include=Observation:subject",
    "/fhir/Patient?_revinclude=Observation:subject&family=Lean",
    "/fhir/Observation?subject.family=Lean",
    "/fhir/Patient?_has:Observation:subject:code=1234-5",
    "/fhir/Patient?_id=nobody",
]


@pytest.mark.parametrize("path", SEARCHES)
def test_lean_search_matches_the_full_path(client, served, clinic, path):  # noqa: ANN001
    served.clear()
    lean = client.get(path, headers={"X-Request-ID": "lean-1"})
    full = client.get(path, headers=FULL)
    assert served == [True, False]
    assert lean.status_code == full.status_code == 200
    assert lean.data == full.data
    assert _headers(lean) == _headers(full)
    assert lean.headers["X-Request-ID"] == "lean-1"
    assert lean.json["resourceType"] == "Bundle" and lean.json["type"] == "searchset"


def test_lean_search_finds_what_was_written(client, clinic):  # noqa: ANN001
    ids, _obs = clinic
    got = client.get("/fhir/Patient?family=Lean").json
    assert got["total"] == 3 and {e["resource"]["id"] for e in got["entry"]} == set(ids[:3])
    nxt = client.get("/fhir/Patient?family=Lean&_count=2").json
    link = {x["relation"]: x["url"] for x in nxt["link"]}["next"]
    page2 = client.get("/" + link.split("/", 3)[3]).json
    assert len(page2["entry"]) == 1
    assert {e["resource"]["id"] for e in nxt["entry"] + page2["entry"]} == set(ids[:3])
    head = client.head("/fhir/Patient?family=Lean")
    assert head.status_code == 200 and head.data == b""


def test_other_search_answers_come_from_the_full_path(client, served, clinic):  # noqa: ANN001
    served.clear()
    bad = client.get("/fhir/Patient?birthdate=not-a-date")
    assert bad.status_code == 400 and bad.json["resourceType"] == "OperationOutcome"
    strict = client.get("/fhir/Patient?nonsense=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    xml = client.get("/fhir/Patient?family=Lean", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 200 and xml.data.startswith(b"<")
    summary = client.get("/fhir/Patient?family=Lean&_summary=count")
    assert summary.status_code == 200 and summary.json["total"] == 3 and "entry" not in summary.json
    assert client.get("/fhir/Nonsense?x=1").status_code == 404
    client.get("/fhir/Patient/_history?_count=1")  # not a search: the full path
    assert served == [False] * 6
