"""One request parser: every URL form means the same over HTTP and as a Bundle entry's request.url.

A batch entry `GET Patient/1/Observation` once came back as the read of Patient/1; each form here
is sent alone and inside a batch, and both answers must name the same resources.
"""
from __future__ import annotations

import base64
import json

import pytest

from fhirserver.errors import FhirError
from fhirserver.interactions import parse_path, parse_url
from tests.conftest import fhir_json

JSON = {"Content-Type": "application/fhir+json"}
BASE = "http://testserver/fhir"


def _put(client, body: dict) -> dict:  # noqa: ANN001
    r = client.put(f"/fhir/{body['resourceType']}/{body['id']}", data=json.dumps(body), headers=JSON)
    assert r.status_code in (200, 201), r.data
    return fhir_json(r)


@pytest.fixture()
def data(client):  # noqa: ANN001, ANN201
    """Two patients with an Observation each; p1 has two versions."""
    _put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Alpha"}],
                  "identifier": [{"system": "urn:t", "value": "1"}]})
    _put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Alpha"}], "active": True,
                  "identifier": [{"system": "urn:t", "value": "1"}]})
    _put(client, {"resourceType": "Patient", "id": "p2", "name": [{"family": "Beta"}],
                  "identifier": [{"system": "urn:t", "value": "2"}]})
    for oid, pid in (("o1", "p1"), ("o2", "p2")):
        _put(client, {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "bp"},
                      "subject": {"reference": f"Patient/{pid}"}})
    return client


def batch(client, *entries: dict) -> list[dict]:  # noqa: ANN001
    r = client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "batch", "entry": list(entries)}),
                    headers=JSON)
    assert r.status_code == 200, r.data
    out = fhir_json(r)
    assert out["type"] == "batch-response"
    return out["entry"]


def _status(entry: dict) -> int:
    return int(entry["response"]["status"].split()[0])


def _names(body: dict | None) -> object:
    """What an answer is about: a Bundle's type and entries, a resource's identity and version."""
    if body is None:
        return None
    if body.get("resourceType") == "Bundle":
        return body["type"], sorted(
            (e["resource"]["resourceType"], e["resource"].get("id"), e["resource"].get("meta", {}).get("versionId"))
            for e in body.get("entry", []) if e.get("resource", {}).get("resourceType") != "OperationOutcome")
    if body.get("resourceType") == "OperationOutcome":
        return "OperationOutcome"
    return body["resourceType"], body.get("id"), body.get("meta", {}).get("versionId")


READS = [
    # (url, what the answer must hold, so a wrong route cannot pass by agreeing with itself)
    ("Patient/p1/Observation", ("searchset", [("Observation", "o1", "1")])),
    ("Patient/p1/Observation?code:text=bp", ("searchset", [("Observation", "o1", "1")])),
    ("Patient/p1/*", ("searchset", [("Observation", "o1", "1"), ("Patient", "p1", "2")])),
    ("Patient/p1/_history", ("history", [("Patient", "p1", "1"), ("Patient", "p1", "2")])),
    ("Patient/p1/_history/1", ("Patient", "p1", "1")),
    ("Patient/p1", ("Patient", "p1", "2")),
    ("Patient?name=Beta", ("searchset", [("Patient", "p2", "1")])),
    ("Patient?identifier=urn:t|1", ("searchset", [("Patient", "p1", "2")])),
    ("Observation?subject=Patient/p2", ("searchset", [("Observation", "o2", "1")])),
    ("Patient/p1/$everything", ("searchset", [("Observation", "o1", "1"), ("Patient", "p1", "2")])),
    (f"{BASE}/Patient/p1/Observation", ("searchset", [("Observation", "o1", "1")])),
    ("/Patient/p1/Observation", ("searchset", [("Observation", "o1", "1")])),
]


@pytest.mark.parametrize(("url", "expected"), READS, ids=[u for u, _ in READS])
def test_batch_get_entry_answers_like_the_same_get(data, url: str, expected: object) -> None:  # noqa: ANN001
    http = data.get("/fhir/" + url.removeprefix(BASE + "/").lstrip("/"))
    assert http.status_code == 200, http.data
    assert _names(fhir_json(http)) == expected
    [entry] = batch(data, {"request": {"method": "GET", "url": url}})
    assert _status(entry) == 200, entry
    assert _names(entry["resource"]) == expected


def test_type_and_system_history_entries(data) -> None:  # noqa: ANN001
    patient, system = batch(data, {"request": {"method": "GET", "url": "Patient/_history"}},
                            {"request": {"method": "GET", "url": "_history"}})
    kind, rows = _names(patient["resource"])
    assert kind == "history" and {r[0] for r in rows} == {"Patient"} and len(rows) == 3
    kind, rows = _names(system["resource"])
    assert kind == "history" and {r[0] for r in rows} == {"Patient", "Observation"} and len(rows) == 5


REFUSED = [
    ("DELETE", "Patient/p1/Observation", 405),   # a compartment is searched, never written
    ("PUT", "Patient/p1/Observation?code:text=bp", 405),
    ("POST", "Patient/p1/Observation", 405),
    ("GET", "Patient/p1/_history/1/extra", 404),
    ("GET", "Patient/p1/Observation/o1", 404),
    ("GET", "Patient/p1/_search", 404),
    ("GET", "Patient/_history/1", 404),
    ("DELETE", "Patient/p1/_history/1", 405),
    ("GET", "Patient/p1/$no-such-operation", 404),
    ("PUT", "Patient/p1/$everything", 405),
    ("GET", "Patient/p1/Observation-x", 404),  # not a type: refused, not read as Patient/p1
]


@pytest.mark.parametrize(("method", "url", "status"), REFUSED, ids=[f"{m} {u}" for m, u, _ in REFUSED])
def test_refused_forms_answer_alike(data, method: str, url: str, status: int) -> None:  # noqa: ANN001
    body = json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    http = data.open("/fhir/" + url, method=method, data=body if method in ("PUT", "POST") else None, headers=JSON)
    assert http.status_code == status, http.data
    assert fhir_json(http)["resourceType"] == "OperationOutcome"
    entry = {"request": {"method": method, "url": url}}
    if method in ("PUT", "POST"):
        entry["resource"] = json.loads(body)
    [out] = batch(data, entry)
    assert _status(out) == status, out
    assert out["response"]["outcome"]["resourceType"] == "OperationOutcome"
    # nothing was written by any refused form
    assert _names(fhir_json(data.get("/fhir/Patient/p1/*"))) == READS[2][1]


def test_post_search_entries(data) -> None:  # noqa: ANN001
    system, compartment = batch(
        data, {"request": {"method": "POST", "url": "Patient/_search?name=Alpha"}},
        {"request": {"method": "POST", "url": "Patient/p2/Observation/_search"}})
    assert _names(system["resource"]) == ("searchset", [("Patient", "p1", "2")])
    assert _names(compartment["resource"]) == ("searchset", [("Observation", "o2", "1")])


def test_conditional_entries(data) -> None:  # noqa: ANN001
    patch = base64.b64encode(json.dumps([{"op": "add", "path": "/gender", "value": "female"}]).encode()).decode()
    create, update, patched, deleted, created = batch(
        data,
        {"resource": {"resourceType": "Patient", "name": [{"family": "Gamma"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:t|2"}},
        {"resource": {"resourceType": "Patient", "active": False, "identifier": [{"system": "urn:t", "value": "1"}]},
         "request": {"method": "PUT", "url": "Patient?identifier=urn:t|1"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
         "request": {"method": "PATCH", "url": "Patient?identifier=urn:t|2"}},
        {"request": {"method": "DELETE", "url": "Observation?subject=Patient/p2"}},
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "3"}]},
         "request": {"method": "PUT", "url": "Patient?identifier=urn:t|3"}})
    assert _status(create) == 200 and _names(create["resource"]) == ("Patient", "p2", "1")  # it existed
    assert _status(update) == 200 and _names(update["resource"]) == ("Patient", "p1", "3")
    assert _status(patched) == 200 and patched["resource"]["gender"] == "female"
    assert _status(deleted) == 204
    assert data.get("/fhir/Observation/o2").status_code == 410
    assert _status(created) == 201
    assert fhir_json(data.get("/fhir/Patient?identifier=urn:t|3"))["total"] == 1
    # a conditional write without criteria is refused alike in a Bundle and over HTTP
    [bare] = batch(data, {"request": {"method": "DELETE", "url": "Patient"}})
    assert _status(bare) == data.delete("/fhir/Patient").status_code == 405


# -- the parser itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "shape"), [
    ("", (None, None, None, None, None)),
    ("Patient", ("Patient", None, None, None, None)),
    ("Patient/1", ("Patient", "1", None, None, None)),
    ("Patient/1/_history", ("Patient", "1", "_history", None, None)),
    ("Patient/1/_history/2", ("Patient", "1", "_history", "2", None)),
    ("Patient/_history", ("Patient", None, "_history", None, None)),
    ("_history", (None, None, "_history", None, None)),
    ("Patient/_search", ("Patient", None, "_search", None, None)),
    ("$export", (None, None, "$export", None, None)),
    ("Patient/$match", ("Patient", None, "$match", None, None)),
    ("Patient/1/$everything", ("Patient", "1", "$everything", None, None)),
    ("Patient/1/Observation", ("Observation", None, None, None, ("Patient", "1"))),
    ("Patient/1/*", (None, None, None, None, ("Patient", "1"))),
    ("Patient/1/Observation/_search", ("Observation", None, "_search", None, ("Patient", "1"))),
])
def test_parse_path_shapes(path: str, shape: tuple) -> None:
    req = parse_path("GET", [s for s in path.split("/") if s])
    assert (req.res_type, req.res_id, req.operation, req.version_id, req.compartment) == shape
    via_url = parse_url("GET", path, BASE)
    assert (via_url.res_type, via_url.res_id, via_url.operation, via_url.version_id, via_url.compartment) == shape


@pytest.mark.parametrize("path", ["Patient/1/_history/2/x", "Patient/1/Observation/2", "_history/x",
                                  "$export/x", "Patient/$match/x", "Patient/1/$everything/x", "Patient/1/_search"])
def test_parse_path_unknown_shapes(path: str) -> None:
    with pytest.raises(FhirError) as info:
        parse_path("GET", path.split("/"))
    assert info.value.status == 404


def test_parse_url_bases_and_queries() -> None:
    req = parse_url("get", f"{BASE}/Patient/1/Observation?code=x&code=y&_count=", BASE)
    assert req.method == "GET" and req.compartment == ("Patient", "1") and req.res_type == "Observation"
    assert req.params == [("code", "x"), ("code", "y"), ("_count", "")]
    other = parse_url("GET", "https://elsewhere.example/r4/fhir/Patient/9/_history/3", BASE)
    assert (other.res_type, other.res_id, other.version_id) == ("Patient", "9", "3")


def test_transaction_entries_use_the_same_parser(data) -> None:  # noqa: ANN001
    new = {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
           "subject": {"reference": "Patient/p1"}}
    ok = data.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": new, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": "Patient/p1/Observation"}}]}), headers=JSON)
    assert ok.status_code == 200, ok.data
    created, searched = fhir_json(ok)["entry"]
    kind, rows = _names(searched["resource"])
    assert kind == "searchset" and [r[0] for r in rows] == ["Observation", "Observation"]  # GETs run last
    # a compartment written to in a transaction fails the whole Bundle, as it would alone
    bad = data.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": new, "request": {"method": "POST", "url": "Observation"}},
        {"resource": new, "request": {"method": "PUT", "url": "Patient/p1/Observation"}}]}), headers=JSON)
    assert bad.status_code == 405, bad.data
    assert fhir_json(data.get("/fhir/Patient/p1/Observation?_summary=count"))["total"] == 2
