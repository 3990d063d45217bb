"""Real FHIR client libraries against a live `fhirserver serve`.

Issue requirement: "Real clients work against it: `fhirclient` (needs a complete
CapabilityStatement and strictly clean R4 JSON) and `fhirpy` (writes with `application/json`)."

* fhirclient (smart-on-fhir/client-py) parses every answer with strict R4 models: an unknown
  key, a wrong type or a missing required element in the CapabilityStatement, a Patient or a
  search Bundle raises `FHIRValidationError`. It writes `Content-type: application/fhir+json`.
* fhirpy (beda-software) writes through `requests.request(..., json=data)`, i.e. with
  `Content-Type: application/json`, and reads with `Accept: application/fhir+json`.

The live server is shared by the whole session, so every test uses its own identifier system.
"""
from __future__ import annotations

import asyncio
import json
import uuid
import warnings
from typing import Any

import pytest
import requests

fhirclient = pytest.importorskip("fhirclient")
fhirpy = pytest.importorskip("fhirpy")

from fhirclient import client as fc_client  # noqa: E402
from fhirclient.models.bundle import Bundle as FcBundle  # noqa: E402
from fhirclient.models.capabilitystatement import CapabilityStatement as FcCapabilityStatement  # noqa: E402
from fhirclient.models.observation import Observation as FcObservation  # noqa: E402
from fhirclient.models.patient import Patient as FcPatient  # noqa: E402
from fhirpy import AsyncFHIRClient, SyncFHIRClient  # noqa: E402
from fhirpy.base.exceptions import OperationOutcome as FhirpyOperationOutcome  # noqa: E402
from fhirpy.base.exceptions import ResourceNotFound  # noqa: E402

FHIR_JSON = "application/fhir+json"


def _system() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _raw(base: str, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{base}/{path}", headers={"Accept": FHIR_JSON, **headers}, timeout=30)


# ---------------------------------------------------------------------------------------------
# fhirclient (SMART client-py)
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def smart(live_server):  # noqa: ANN001, ANN201
    return fc_client.FHIRClient(settings={"app_id": "test", "api_base": live_server.base})


def _fc_search(struct: dict[str, Any], server: Any) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # perform_resources() is deprecated
        return FcPatient.where(struct=struct).perform_resources(server)


@pytest.mark.slow
def test_fhirclient_prepare_reads_a_complete_capability_statement(smart, live_server) -> None:  # noqa: ANN001
    assert smart.prepare() is True          # open server: fhirclient picks its no-auth FHIRAuth
    assert smart.ready is True
    cs = smart.server.capabilityStatement   # parsed with the strict R4 model (raises when invalid)
    assert isinstance(cs, FcCapabilityStatement)
    assert cs.fhirVersion == "4.0.1"
    assert cs.kind == "instance" and cs.status == "active"
    assert cs.date is not None and cs.format
    assert "application/fhir+json" in cs.format or "json" in cs.format
    rest = cs.rest[0]
    assert rest.mode == "server"
    patient = next(r for r in rest.resource if r.type == "Patient")
    codes = {i.code for i in patient.interaction}
    assert {"read", "vread", "update", "delete", "create", "search-type"} <= codes
    assert {"_id", "identifier"} <= {p.name for p in patient.searchParam or []}

    # Strict and lossless: re-serialising the model gives back exactly what the server sent.
    raw = _raw(live_server.base, "metadata")
    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith(FHIR_JSON)
    assert FcCapabilityStatement(raw.json(), strict=True).as_json() == raw.json()


@pytest.mark.slow
def test_fhirclient_patient_crud_and_search(smart, live_server) -> None:  # noqa: ANN001
    assert smart.prepare()
    server = smart.server
    system = _system()
    patient = FcPatient({
        "active": True,
        "identifier": [{"system": system, "value": "mrn-1"}],
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
    })

    created = patient.create(server)        # POST Patient, Content-type: application/fhir+json
    assert created is not None, "the server must return the created resource by default"
    new = FcPatient(created, strict=True)   # strict R4 parse of the answer
    pid = new.id
    assert pid and new.meta.versionId == "1" and new.meta.lastUpdated is not None

    got = FcPatient.read(pid, server)
    assert got.id == pid
    assert got.name[0].family == "Chalmers"
    assert got.name[0].given == ["Peter", "James"]
    assert got.birthDate.isostring == "1974-12-25"
    assert got.gender == "male" and got.active is True
    assert got.identifier[0].system == system and got.identifier[0].value == "mrn-1"
    assert got.meta.versionId == "1"

    # update: PUT Patient/<id> with the full resource
    got.birthDate = got.birthDate.__class__("1974-12-26")
    got.name[0].given = ["Peter"]
    updated = got.update(server)
    assert updated is not None
    assert FcPatient(updated, strict=True).meta.versionId == "2"
    again = FcPatient.read(pid, server)
    assert again.birthDate.isostring == "1974-12-26"
    assert again.name[0].given == ["Peter"]
    assert again.meta.versionId == "2"

    # search by _id and by identifier (token system|value), the bundle parsed strictly
    by_id = _fc_search({"_id": pid}, server)
    assert [r.id for r in by_id] == [pid]
    assert isinstance(by_id[0], FcPatient) and by_id[0].birthDate.isostring == "1974-12-26"
    by_ident = _fc_search({"identifier": f"{system}|mrn-1"}, server)
    assert [r.id for r in by_ident] == [pid]
    assert _fc_search({"identifier": f"{system}|nope"}, server) == []

    bundle = FcBundle.read_from(f"Patient?_id={pid}", server)
    assert bundle.type == "searchset" and bundle.total == 1
    assert bundle.entry[0].fullUrl.endswith(f"/Patient/{pid}")
    assert bundle.entry[0].search.mode == "match"

    # delete, then read: 410 Gone (fhirclient only maps 404 to FHIRNotFoundException)
    again.delete(server)
    with pytest.raises(requests.HTTPError) as err:
        FcPatient.read(pid, server)
    assert err.value.response.status_code == 410
    assert _fc_search({"_id": pid}, server) == []


@pytest.mark.slow
def test_fhirclient_read_unknown_patient_is_not_found(smart) -> None:  # noqa: ANN001
    from fhirclient.server import FHIRNotFoundException

    assert smart.prepare()
    with pytest.raises(FHIRNotFoundException):
        FcPatient.read(f"no-such-{uuid.uuid4().hex[:12]}", smart.server)


@pytest.mark.slow
def test_fhirclient_observation_decimal_round_trips(smart, live_server) -> None:  # noqa: ANN001
    assert smart.prepare()
    server = smart.server
    pat = FcPatient({"name": [{"family": "Decimal"}]}).create(server)
    obs = FcObservation({
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
        "subject": {"reference": f"Patient/{pat['id']}"},
        "effectiveDateTime": "2024-03-01T08:30:00+01:00",
        "valueQuantity": {"value": 6.0, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
    })
    created = obs.create(server)
    oid = created["id"]

    got = FcObservation.read(oid, server)
    assert got.valueQuantity.value == 6.0
    assert got.valueQuantity.unit == "mmol/L"
    assert got.subject.reference == f"Patient/{pat['id']}"
    assert got.effectiveDateTime.isostring == "2024-03-01T08:30:00+01:00"

    # The decimal's text survives: fhirclient sent `6.0`, the server must answer `6.0`, not `6`.
    raw = _raw(live_server.base, f"Observation/{oid}").text
    assert '"value":6.0' in raw.replace(" ", "")

    # update with a different decimal, then read back
    got.valueQuantity.value = 7.25
    got.update(server)
    assert FcObservation.read(oid, server).valueQuantity.value == 7.25
    assert '"value":7.25' in _raw(live_server.base, f"Observation/{oid}").text.replace(" ", "")


@pytest.mark.slow
def test_fhirclient_search_follows_next_links(smart) -> None:  # noqa: ANN001
    assert smart.prepare()
    server = smart.server
    system = _system()
    ids = set()
    for i in range(5):
        ids.add(FcPatient({"identifier": [{"system": system, "value": f"v{i}"}],
                           "name": [{"family": f"Page{i}"}]}).create(server)["id"])
    search = FcPatient.where(struct={"identifier": f"{system}|", "_count": "2"})
    bundles = list(search.perform_iter(server))   # follows Bundle.link[next] (absolute URLs)
    assert len(bundles) == 3
    found = [e.resource.id for b in bundles for e in (b.entry or [])]
    assert sorted(found) == sorted(ids)


@pytest.mark.slow
def test_fhirclient_transaction_and_history_parse_strictly(smart, live_server) -> None:  # noqa: ANN001
    assert smart.prepare()
    server = smart.server
    system = _system()
    full_url = f"urn:uuid:{uuid.uuid4()}"
    tx = FcBundle({"type": "transaction", "entry": [
        {"fullUrl": full_url, "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": "t1"}],
                      "name": [{"family": "Zoë Ñúñez"}]}},
        {"request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                      "subject": {"reference": full_url}, "valueQuantity": {"value": 6.0}}},
    ]})
    answer = FcBundle(tx.create(server), strict=True)   # POST [base]
    assert answer.type == "transaction-response"
    assert [e.response.status.split()[0] for e in answer.entry] == ["201", "201"]
    pid = answer.entry[0].resource.id
    obs = FcObservation.read(answer.entry[1].resource.id, server)
    assert obs.subject.reference == f"Patient/{pid}"      # urn:uuid reference resolved
    assert obs.valueQuantity.value == 6.0
    patient = FcPatient.read(pid, server)
    assert patient.name[0].family == "Zoë Ñúñez"           # non-ASCII round trip
    patient.gender = "other"
    patient.update(server)
    patient.delete(server)

    history = FcBundle.read_from(f"Patient/{pid}/_history", server)   # strict parse
    assert history.type == "history" and history.total == 3
    methods = [e.request.method for e in history.entry]
    assert methods == ["DELETE", "PUT", "POST"]          # newest first
    assert history.entry[0].resource is None
    assert history.entry[1].resource.gender == "other"
    v1 = FcPatient.read_from(f"Patient/{pid}/_history/1", server)     # vread
    assert v1.meta.versionId == "1" and v1.gender is None


# ---------------------------------------------------------------------------------------------
# fhirpy (beda-software)
# ---------------------------------------------------------------------------------------------
class _Spy:
    """Records what fhirpy puts on the wire (it calls `requests.request`)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def wrap(self, real):  # noqa: ANN001, ANN201
        def request(method, url, **kw):  # noqa: ANN001, ANN202, ANN003
            resp = real(method, url, **kw)
            req = resp.request
            self.calls.append({"method": method.upper(), "url": url,
                               "content_type": req.headers.get("Content-Type"),
                               "body": req.body, "status": resp.status_code, "response": resp.text})
            return resp
        return request


@pytest.fixture()
def spy(monkeypatch):  # noqa: ANN001, ANN201
    import fhirpy.base.lib_sync as lib_sync

    s = _Spy()
    monkeypatch.setattr(lib_sync.requests, "request", s.wrap(lib_sync.requests.request))
    return s


@pytest.fixture()
def fp(live_server) -> SyncFHIRClient:  # noqa: ANN001
    return SyncFHIRClient(live_server.base)


@pytest.mark.slow
def test_fhirpy_writes_application_json_and_crud(fp, spy, live_server) -> None:  # noqa: ANN001
    system = _system()
    patient = fp.resource("Patient", identifier=[{"system": system, "value": "p1"}],
                          name=[{"family": "Smith", "given": ["Jane"]}], birthDate="1980-01-02",
                          gender="female")
    patient.save()                                       # POST Patient
    post = spy.calls[-1]
    assert post["method"] == "POST" and post["status"] == 201
    assert post["content_type"] == "application/json"    # what fhirpy writes
    pid = patient.id
    assert pid and patient["meta"]["versionId"] == "1"

    fetched = fp.reference("Patient", pid).to_resource()
    assert fetched["name"][0]["family"] == "Smith"
    assert fetched["name"][0]["given"] == ["Jane"]
    assert fetched["birthDate"] == "1980-01-02"
    assert fetched.get_by_path(["identifier", 0, "value"]) == "p1"

    fetched["birthDate"] = "1980-01-03"
    fetched["name"][0]["given"].append("Ann")
    fetched.save()                                       # PUT Patient/<id>, application/json
    put = spy.calls[-1]
    assert put["method"] == "PUT" and put["status"] == 200
    assert put["content_type"] == "application/json"
    assert fetched["meta"]["versionId"] == "2"
    again = fp.get("Patient", pid)
    assert again["birthDate"] == "1980-01-03" and again["name"][0]["given"] == ["Jane", "Ann"]

    # refresh() sends If-None-Match with the bare versionId: unchanged -> 304 -> kept as is
    fetched.refresh()
    assert spy.calls[-1]["status"] == 304
    assert fetched["meta"]["versionId"] == "2"

    # search
    found = fp.resources("Patient").search(_id=pid).fetch()
    assert [r.id for r in found] == [pid]
    first = fp.resources("Patient").search(identifier=f"{system}|p1").first()
    assert first is not None and first.id == pid and first["birthDate"] == "1980-01-03"
    assert fp.resources("Patient").search(identifier=f"{system}|p1").get().id == pid
    assert fp.resources("Patient").search(identifier=f"{system}|p1").count() == 1
    assert fp.resources("Patient").search(identifier=f"{system}|other").first() is None

    # delete, then fetching raises the client's not-found error (the server answers 410 Gone)
    fetched.delete()
    assert spy.calls[-1]["method"] == "DELETE" and spy.calls[-1]["status"] in (200, 204)
    with pytest.raises(ResourceNotFound):
        fp.get("Patient", pid)
    assert spy.calls[-1]["status"] == 410
    assert json.loads(spy.calls[-1]["response"])["resourceType"] == "OperationOutcome"
    assert fp.resources("Patient").search(_id=pid).fetch() == []


@pytest.mark.slow
def test_fhirpy_observation_decimal_round_trips(fp, live_server) -> None:  # noqa: ANN001
    pat = fp.resource("Patient", name=[{"family": "Dec"}])
    pat.save()
    obs = fp.resource("Observation", status="final",
                      code={"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                      subject=pat.to_reference(),
                      valueQuantity={"value": 6.0, "unit": "mmol/L"})
    obs.save()
    assert obs["subject"]["reference"] == f"Patient/{pat.id}"
    got = fp.get("Observation", obs.id)
    assert got["valueQuantity"]["value"] == 6.0
    assert isinstance(got["valueQuantity"]["value"], float)
    assert '"value":6.0' in _raw(live_server.base, f"Observation/{obs.id}").text.replace(" ", "")


@pytest.mark.slow
def test_fhirpy_conditional_update_by_identifier(fp, spy) -> None:  # noqa: ANN001
    system = _system()
    search = fp.resources("Patient").search(identifier=f"{system}|c1")
    res, created = search.update(fp.resource("Patient", identifier=[{"system": system, "value": "c1"}],
                                             name=[{"family": "Cond"}]))
    assert created is True and spy.calls[-1]["status"] == 201
    res2, created2 = search.update(fp.resource("Patient", identifier=[{"system": system, "value": "c1"}],
                                               name=[{"family": "Cond2"}]))
    assert created2 is False and res2.id == res.id
    assert res2["meta"]["versionId"] == "2"
    assert fp.get("Patient", res.id)["name"][0]["family"] == "Cond2"


@pytest.mark.slow
def test_fhirpy_patch_sends_partial_application_json(fp, spy) -> None:  # noqa: ANN001
    """fhirpy's `resource.patch(k=v)` sends `PATCH <type>/<id>`, `Content-Type: application/json`,
    body `{"k": v}`: a partial resource with JSON Merge Patch semantics (an Aidbox convention).
    FHIR R4 defines only JSON Patch (application/json-patch+json), XML Patch and FHIRPath Patch
    (a Parameters resource), so the server may refuse it -- then cleanly, with a 4xx
    OperationOutcome and without touching the resource -- or apply it as a merge patch."""
    system = _system()
    patient = fp.resource("Patient", identifier=[{"system": system, "value": "x"}],
                          name=[{"family": "Patchy"}], birthDate="1990-01-01")
    patient.save()
    pid = patient.id

    try:
        patient.patch(birthDate="1990-02-02")
        rejected = None
    except FhirpyOperationOutcome as exc:
        rejected = exc
    sent = spy.calls[-1]
    assert sent["method"] == "PATCH" and sent["url"].split("?")[0].endswith(f"/Patient/{pid}")
    assert sent["content_type"] == "application/json"
    assert json.loads(sent["body"]) == {"birthDate": "1990-02-02"}
    current = fp.get("Patient", pid)
    if rejected is not None:
        # refused (R4 has no merge patch): a clean 4xx OperationOutcome, resource untouched
        assert 400 <= sent["status"] < 500, sent
        assert rejected.resource["resourceType"] == "OperationOutcome"
        assert rejected.resource["issue"][0]["severity"] in ("error", "fatal")
        assert current["birthDate"] == "1990-01-01" and current["meta"]["versionId"] == "1"
        version = 1
    else:
        # accepted as a merge patch: applied, everything else kept
        assert sent["status"] == 200, sent
        assert current["birthDate"] == "1990-02-02" and current["meta"]["versionId"] == "2"
        assert current["name"] == [{"family": "Patchy"}]
        assert current["identifier"] == [{"system": system, "value": "x"}]
        version = 2

    # A standard FHIRPath Patch through fhirpy's public `execute` (also sent as application/json).
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1990-03-03"}]}]}
    out = fp.execute(f"Patient/{pid}", method="patch", data=params)
    assert spy.calls[-1]["content_type"] == "application/json" and spy.calls[-1]["status"] == 200
    assert out["birthDate"] == "1990-03-03" and out["meta"]["versionId"] == str(version + 1)
    assert out["name"] == [{"family": "Patchy"}]
    assert fp.get("Patient", pid)["birthDate"] == "1990-03-03"


@pytest.mark.slow
def test_fhirpy_invalid_resource_gives_operation_outcome(fp) -> None:  # noqa: ANN001
    bad = fp.resource("Patient", birthDate="not-a-date")
    with pytest.raises(FhirpyOperationOutcome) as err:
        bad.save()
    assert err.value.resource["resourceType"] == "OperationOutcome"
    assert err.value.resource["issue"][0]["severity"] == "error"


@pytest.mark.slow
def test_fhirpy_async_client_crud(live_server) -> None:  # noqa: ANN001
    async def scenario() -> None:
        c = AsyncFHIRClient(live_server.base)
        system = _system()
        p = c.resource("Patient", identifier=[{"system": system, "value": "a1"}],
                       name=[{"family": "Async"}], birthDate="2001-05-06")
        await p.save()
        pid = p.id
        assert pid and p["meta"]["versionId"] == "1"
        got = await c.reference("Patient", pid).to_resource()
        assert got["birthDate"] == "2001-05-06"
        got["birthDate"] = "2001-05-07"
        await got.save()
        assert got["meta"]["versionId"] == "2"
        found = await c.resources("Patient").search(identifier=f"{system}|a1").fetch()
        assert [r.id for r in found] == [pid] and found[0]["birthDate"] == "2001-05-07"
        first = await c.resources("Patient").search(_id=pid).first()
        assert first is not None and first.id == pid
        await got.delete()
        with pytest.raises(ResourceNotFound):
            await c.get("Patient", pid)

    asyncio.run(scenario())


@pytest.mark.slow
def test_fhirpy_paging_and_conditional_delete(fp, spy) -> None:  # noqa: ANN001
    system = _system()
    ids = set()
    for i in range(5):
        r = fp.resource("Patient", identifier=[{"system": system, "value": f"v{i}"}],
                        name=[{"family": f"Page{i}"}])
        r.save()
        ids.add(r.id)
    search = fp.resources("Patient").search(identifier=f"{system}|")
    assert len(search.limit(2).fetch()) == 2
    assert {r.id for r in search.limit(2).fetch_all()} == ids   # follows Bundle.link[next]
    assert search.count() == 5

    one = fp.resources("Patient").search(identifier=f"{system}|v3")
    one.delete()                                                 # DELETE Patient?identifier=...
    assert spy.calls[-1]["method"] == "DELETE" and spy.calls[-1]["status"] in (200, 204)
    assert one.first() is None
    assert search.count() == 4
