"""Errors are OperationOutcomes with the right status; JSON and XML both ways; subsets."""
from __future__ import annotations

import json

import pytest

from tests.conftest import fhir_json

JSON = "application/fhir+json"


def _oo(r) -> dict:  # noqa: ANN001
    body = fhir_json(r)
    assert body["resourceType"] == "OperationOutcome", body
    assert "Traceback" not in r.data.decode()
    return body


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/fhir/NotAType", 404),
    ("GET", "/fhir/NotAType/1", 404),
    ("GET", "/fhir/Patient/bad$id", 400),
    ("POST", "/fhir/Patient/123", 405),
    ("DELETE", "/fhir", 405),
    ("PUT", "/fhir/Patient/1/_history/1", 405),
    ("GET", "/fhir/Patient/1/_history/1/extra", 404),
])
def test_routing_errors(client, method, path, status) -> None:  # noqa: ANN001
    r = client.open(path, method=method, data="{}", headers={"Content-Type": JSON})
    assert r.status_code == status
    _oo(r)


def test_unsupported_media_type(client) -> None:  # noqa: ANN001
    r = client.post("/fhir/Patient", data="name=x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    _oo(r)


@pytest.mark.parametrize("body,ctype", [
    (b'{"resourceType": "Patient",', JSON),
    (b"[1, 2]", JSON),
    (b"<Patient xmlns='http://hl7.org/fhir'><active value='true'/>", "application/fhir+xml"),
    (b'{"resourceType": "Nope"}', JSON),
    (b'{"name": []}', JSON),
])
def test_malformed_bodies_are_400(client, body, ctype) -> None:  # noqa: ANN001
    r = client.post("/fhir/Patient", data=body, headers={"Content-Type": ctype})
    assert r.status_code == 400
    _oo(r)
    assert fhir_json(client.get("/fhir/Patient"))["total"] == 0


def test_invalid_resource_is_422_with_paths(client) -> None:  # noqa: ANN001
    body = {"resourceType": "Patient", "birthDate": "31/12/2000", "gender": "robot",
            "name": [{"family": 3}], "unknownElement": True}
    r = client.post("/fhir/Patient", data=json.dumps(body), headers={"Content-Type": JSON})
    assert r.status_code == 422
    paths = {e for i in _oo(r)["issue"] for e in i.get("expression", [])}
    assert {"Patient.birthDate", "Patient.gender", "Patient.unknownElement"} <= paths
    assert any(p.startswith("Patient.name[0].family") for p in paths)


def test_body_type_must_match_url(client) -> None:  # noqa: ANN001
    r = client.post("/fhir/Observation", data=json.dumps({"resourceType": "Patient"}),
                    headers={"Content-Type": JSON})
    assert r.status_code == 400
    _oo(r)


def test_body_over_limit_is_413(client) -> None:  # noqa: ANN001
    big = {"resourceType": "Patient", "text": {"status": "generated",
           "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "x" * (3 * 1024 * 1024) + "</div>"}}
    r = client.post("/fhir/Patient", data=json.dumps(big), headers={"Content-Type": JSON})
    assert r.status_code == 413
    _oo(r)


def test_application_json_is_accepted_both_ways(client) -> None:  # noqa: ANN001
    r = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "active": True}),
                    headers={"Content-Type": "application/json", "Accept": "application/json"})
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")


def test_xml_in_and_out(client) -> None:  # noqa: ANN001
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><active value="true"/>'
           b'<name><family value="Xml"/><given value="Ann"/></name><birthDate value="1970-01-01"/></Patient>')
    r = client.post("/fhir/Patient", data=xml,
                    headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"})
    assert r.status_code == 201, r.data
    assert r.headers["Content-Type"].startswith("application/fhir+xml")
    assert b'<family value="Xml"/>' in r.data
    pid = r.headers["Location"].split("/Patient/")[1].split("/")[0]
    as_json = fhir_json(client.get(f"/fhir/Patient/{pid}"))
    assert as_json["name"] == [{"family": "Xml", "given": ["Ann"]}] and as_json["active"] is True
    assert client.get(f"/fhir/Patient/{pid}?_format=xml").data.startswith(b"<?xml")
    assert client.get(f"/fhir/Patient/{pid}?_format=application/fhir%2Bxml").data.startswith(b"<?xml")


def test_not_acceptable(client) -> None:  # noqa: ANN001
    assert client.get("/fhir/metadata", headers={"Accept": "application/pdf"}).status_code == 406
    assert client.get("/fhir/metadata?_format=yaml").status_code == 406


def test_pretty(client) -> None:  # noqa: ANN001
    r = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "active": True}),
                    headers={"Content-Type": JSON})
    pid = fhir_json(r)["id"]
    assert b"\n  " in client.get(f"/fhir/Patient/{pid}?_pretty=true").data
    assert b"\n" not in client.get(f"/fhir/Patient/{pid}").data


def test_summary_and_elements(client) -> None:  # noqa: ANN001
    body = {"resourceType": "Patient", "text": {"status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jane</div>'},
            "name": [{"family": "Doe"}], "photo": [{"contentType": "image/png", "data": "AAAA"}],
            "birthDate": "2000-01-01"}
    pid = fhir_json(client.post("/fhir/Patient", data=json.dumps(body), headers={"Content-Type": JSON}))["id"]
    summary = fhir_json(client.get(f"/fhir/Patient/{pid}?_summary=true"))
    assert "name" in summary and "photo" not in summary and "text" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    data = fhir_json(client.get(f"/fhir/Patient/{pid}?_summary=data"))
    assert "text" not in data and "photo" in data
    text = fhir_json(client.get(f"/fhir/Patient/{pid}?_summary=text"))
    assert "text" in text and "name" not in text
    full = fhir_json(client.get(f"/fhir/Patient/{pid}?_summary=false"))
    assert "photo" in full and "text" in full
    elems = fhir_json(client.get(f"/fhir/Patient/{pid}?_elements=birthDate"))
    assert set(elems) == {"resourceType", "id", "meta", "birthDate"}
    count = fhir_json(client.get("/fhir/Patient?_summary=count"))
    assert count["total"] == 1 and "entry" not in count
    assert client.get("/fhir/Patient?_summary=bogus").status_code == 400


def test_metadata_is_a_capability_statement(client) -> None:  # noqa: ANN001
    from fhirserver.model.validate import validate_resource

    cs = fhir_json(client.get("/fhir/metadata"))
    validate_resource(cs, "CapabilityStatement")
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} >= {"read", "vread", "update", "patch", "delete",
                                                            "history-instance", "create", "search-type"}
    assert {p["name"] for p in patient["searchParam"]} >= {"_id", "_lastUpdated", "identifier"}
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    assert len(rest["resource"]) > 140
