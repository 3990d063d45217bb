"""Read, vread, create, update, delete, patch: statuses, headers, bodies (R4 http.html)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import fhir_json

JSON = "application/fhir+json"


def post(client, path, body, **headers):  # noqa: ANN001, ANN201
    return client.post(path, data=json.dumps(body), headers={"Content-Type": JSON, **headers})


def put(client, path, body, **headers):  # noqa: ANN001, ANN201
    return client.put(path, data=json.dumps(body), headers={"Content-Type": JSON, **headers})


def patient(**extra):  # noqa: ANN003, ANN201
    return {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane"]}],
            "birthDate": "1990-01-02", **extra}


def test_create_assigns_id_and_headers(client) -> None:  # noqa: ANN001
    r = post(client, "/fhir/Patient", patient(id="client-chosen"))
    assert r.status_code == 201
    body = fhir_json(r)
    assert body["id"] != "client-chosen"  # the server ignores ids on create
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_what_was_written(client) -> None:  # noqa: ANN001
    created = fhir_json(post(client, "/fhir/Patient", patient()))
    r = client.get(f"/fhir/Patient/{created['id']}")
    assert r.status_code == 200
    assert fhir_json(r) == created
    assert r.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404_outcome(client) -> None:  # noqa: ANN001
    r = client.get("/fhir/Patient/nope")
    assert r.status_code == 404
    assert fhir_json(r)["resourceType"] == "OperationOutcome"


def test_update_versions_and_vread(client) -> None:  # noqa: ANN001
    created = fhir_json(post(client, "/fhir/Patient", patient()))
    pid = created["id"]
    r = put(client, f"/fhir/Patient/{pid}", patient(id=pid, gender="female"))
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    assert fhir_json(client.get(f"/fhir/Patient/{pid}"))["gender"] == "female"
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and "gender" not in fhir_json(v1)
    assert fhir_json(v1)["meta"]["versionId"] == "1"
    assert client.get(f"/fhir/Patient/{pid}/_history/9").status_code == 404


def test_update_creates_with_client_id(client) -> None:  # noqa: ANN001
    r = put(client, "/fhir/Patient/pat-a1", patient(id="pat-a1"))
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/Patient/pat-a1/_history/1")
    assert put(client, "/fhir/Patient/pat-a1", patient(id="pat-a1")).status_code == 200


@pytest.mark.parametrize("body_id,status", [(None, 400), ("other", 400)])
def test_update_id_must_match_url(client, body_id, status) -> None:  # noqa: ANN001
    body = patient() if body_id is None else patient(id=body_id)
    r = put(client, "/fhir/Patient/pat-b", body)
    assert r.status_code == status
    assert fhir_json(r)["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient/pat-b").status_code == 404


def test_if_match(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    r = put(client, f"/fhir/Patient/{pid}", patient(id=pid, gender="male"), **{"If-Match": 'W/"7"'})
    assert r.status_code == 412
    assert "current version is 1" in fhir_json(r)["issue"][0]["diagnostics"]
    r = put(client, f"/fhir/Patient/{pid}", patient(id=pid, gender="male"), **{"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert put(client, f"/fhir/Patient/{pid}", patient(id=pid), **{"If-Match": "garbage"}).status_code == 400


def test_if_none_match_and_if_modified_since(client) -> None:  # noqa: ANN001
    r = post(client, "/fhir/Patient", patient())
    pid = fhir_json(r)["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"2"'}).status_code == 200
    lm = r.headers["Last-Modified"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": lm}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": old}).status_code == 200


def test_delete_then_gone_then_recreate(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    r = client.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410 and fhir_json(gone)["issue"][0]["code"] == "deleted"
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204  # idempotent
    assert client.delete("/fhir/Patient/never-existed").status_code == 204
    r = put(client, f"/fhir/Patient/{pid}", patient(id=pid))
    assert r.status_code == 201 and r.headers["ETag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410


def test_delete_with_prefer_operation_outcome(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    r = client.delete(f"/fhir/Patient/{pid}", headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 200 and fhir_json(r)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("prefer,expect", [
    ("return=minimal", None), ("return=representation", "Patient"),
    ("return=OperationOutcome", "OperationOutcome")])
def test_prefer_return(client, prefer, expect) -> None:  # noqa: ANN001
    r = post(client, "/fhir/Patient", patient(), Prefer=prefer)
    assert r.status_code == 201 and r.headers["Location"]
    if expect is None:
        assert r.data == b""
    else:
        assert fhir_json(r)["resourceType"] == expect


def test_conditional_create(client) -> None:  # noqa: ANN001
    body = patient(identifier=[{"system": "urn:mrn", "value": "42"}])
    first = post(client, "/fhir/Patient", body, **{"If-None-Exist": "identifier=urn:mrn|42"})
    assert first.status_code == 201
    again = post(client, "/fhir/Patient", body, **{"If-None-Exist": "identifier=urn:mrn|42"})
    assert again.status_code == 200 and fhir_json(again)["id"] == fhir_json(first)["id"]
    post(client, "/fhir/Patient", body)
    many = post(client, "/fhir/Patient", body, **{"If-None-Exist": "identifier=urn:mrn|42"})
    assert many.status_code == 412
    bad = post(client, "/fhir/Patient", body, **{"If-None-Exist": "nosuchparam=1"})
    assert bad.status_code == 400


def test_conditional_update_and_delete(client) -> None:  # noqa: ANN001
    body = patient(identifier=[{"system": "urn:mrn", "value": "7"}])
    r = put(client, "/fhir/Patient?identifier=urn:mrn|7", body)
    assert r.status_code == 201
    pid = fhir_json(r)["id"]
    r = put(client, "/fhir/Patient?identifier=urn:mrn|7", {**body, "gender": "other"})
    assert r.status_code == 200 and fhir_json(r)["id"] == pid and r.headers["ETag"] == 'W/"2"'
    assert client.delete("/fhir/Patient?identifier=urn:mrn|7").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete("/fhir/Patient?identifier=urn:mrn|7").status_code == 204
    post(client, "/fhir/Patient", body)
    post(client, "/fhir/Patient", body)
    assert client.delete("/fhir/Patient?identifier=urn:mrn|7").status_code == 412
    assert put(client, "/fhir/Patient?identifier=urn:mrn|7", body).status_code == 412


def test_json_patch(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    ops = [{"op": "replace", "path": "/birthDate", "value": "1991-03-04"},
           {"op": "add", "path": "/active", "value": True}]
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.data
    body = fhir_json(r)
    assert body["birthDate"] == "1991-03-04" and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    bad = [{"op": "test", "path": "/birthDate", "value": "2000-01-01"}]
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps(bad),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    invalid = [{"op": "replace", "path": "/birthDate", "value": "not a date"}]
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps(invalid),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert fhir_json(client.get(f"/fhir/Patient/{pid}"))["meta"]["versionId"] == "2"


def test_fhirpath_patch(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1980-05-06"}]}]}
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps(params), headers={"Content-Type": JSON})
    assert r.status_code == 200, r.data
    assert fhir_json(r)["birthDate"] == "1980-05-06"


def test_patch_with_wrong_media_type(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient()))["id"]
    r = client.patch(f"/fhir/Patient/{pid}", data="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_decimals_round_trip_exactly(client) -> None:  # noqa: ANN001
    obs = ('{"resourceType":"Observation","status":"final","code":{"text":"t"},'
           '"valueQuantity":{"value":6.0,"unit":"mmol/L"},'
           '"referenceRange":[{"low":{"value":3.10},"high":{"value":1E+1}}]}')
    r = client.post("/fhir/Observation", data=obs, headers={"Content-Type": JSON})
    assert r.status_code == 201
    text = client.get(f"/fhir/Observation/{fhir_json(r)['id']}").data.decode()
    assert "6.0" in text and "3.10" in text


def test_merge_patch_as_fhirpy_sends_it(client) -> None:  # noqa: ANN001
    pid = fhir_json(post(client, "/fhir/Patient", patient(gender="female")))["id"]
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps({"birthDate": "1970-07-07", "gender": None}),
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.data
    body = fhir_json(r)
    assert body["birthDate"] == "1970-07-07" and "gender" not in body and body["name"][0]["family"] == "Doe"
    r = client.patch(f"/fhir/Patient/{pid}", data=json.dumps({"id": "other"}),
                     headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422
