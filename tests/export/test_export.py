"""Bulk Data `$export` end to end with backend-services tokens (RS384 client assertions): kick-off,
polling, manifest, NDJSON equal to the same client's searches, access by organization, patient
tokens refused, files only for their requester, cancellation and the parameters."""
from __future__ import annotations

import orjson
import pytest

from tests.auth.smart_helpers import bearer, seed, standard_data
from tests.export.export_helpers import backend_token, user_token

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _h(tok: str, **extra: str) -> dict[str, str]:
    return {**bearer(tok), **ASYNC, **extra}


def _kick(c, tok, url="/fhir/$export", **extra):  # noqa: ANN001, ANN201
    r = c.get(url, headers=_h(tok, **extra))
    assert r.status_code == 202, r.get_data(as_text=True)
    status = r.headers["Content-Location"]
    assert status.startswith("http://testserver/fhir/$export-status/")
    return status.replace("http://testserver", "")


def _manifest(c, tok, status, run_jobs):  # noqa: ANN001, ANN201
    r = c.get(status, headers=bearer(tok))
    assert r.status_code == 202 and r.headers["Retry-After"] and r.headers["X-Progress"]
    run_jobs()
    r = c.get(status, headers=bearer(tok))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "application/json"
    return r.get_json()


def _download(c, tok, m):  # noqa: ANN001, ANN201
    """{type: [resources]} from every output file."""
    out: dict[str, list[dict]] = {}
    for o in m["output"]:
        r = c.get(o["url"].replace("http://testserver", ""), headers={**bearer(tok), "Accept": "application/fhir+ndjson"})
        assert r.status_code == 200 and r.mimetype == "application/fhir+ndjson"
        lines = [orjson.loads(x) for x in r.get_data().splitlines() if x]
        assert len(lines) == o["count"]
        out.setdefault(o["type"], []).extend(lines)
    return out


def _search_all(c, tok, res_type, query=""):  # noqa: ANN001, ANN201
    url, found = f"/fhir/{res_type}?_count=1000{query}", []
    while url:
        b = c.get(url.replace("http://testserver", ""), headers=bearer(tok)).get_json()
        found += [e["resource"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match"]
        url = next((link["url"] for link in b.get("link", []) if link["relation"] == "next"), None)
    return found


@pytest.fixture()
def data(app):  # noqa: ANN001, ANN201
    seed(app.test_client(), standard_data())
    return standard_data()


def test_system_export_equals_the_clients_searches(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    status = _kick(c, tok, "/fhir/$export?_outputFormat=application/fhir%2Bndjson")
    m = _manifest(c, tok, status, run_jobs)
    assert m["requiresAccessToken"] is True and m["transactionTime"] and m["error"] == []
    assert m["request"].endswith("/fhir/$export?_outputFormat=application/fhir%2Bndjson")
    files = _download(c, tok, m)
    assert set(files) - {"AuditEvent"} == {"Organization", "Practitioner", "Patient", "Observation", "RelatedPerson"}
    for res_type, exported in files.items():
        if res_type == "AuditEvent":  # the searches below write more of them
            continue
        assert sorted(r["id"] for r in exported) == sorted(r["id"] for r in _search_all(c, tok, res_type))
        assert exported == sorted(_search_all(c, tok, res_type), key=lambda r: [x["id"] for x in exported].index(r["id"]))


def test_org_bound_client_exports_only_its_organizations_patients(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp, organization="org2")
    m = _manifest(c, tok, _kick(c, tok), run_jobs)
    files = _download(c, tok, m)
    assert {r["id"] for r in files["Patient"]} == {"c"}
    assert {r["id"] for r in files["Observation"]} == {"obs-c-laboratory", "obs-c-vital-signs"}
    assert "RelatedPerson" not in files  # a and b's guardians are org1's
    for res_type, exported in files.items():
        if res_type == "AuditEvent":
            continue
        assert sorted(r["id"] for r in exported) == sorted(r["id"] for r in _search_all(c, tok, res_type))


def test_patient_token_cannot_start_an_export_nor_see_one(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = user_token(xapp, "ann", role="patient", fhir_user="Patient/a",
                     scope="launch/patient patient/*.rs openid fhirUser")
    assert c.get("/fhir/Patient/a", headers=bearer(tok)).status_code == 200  # the token works
    for url in ("/fhir/$export", "/fhir/Patient/$export"):
        r = c.get(url, headers=_h(tok))
        assert r.status_code == 403, (url, r.get_data(as_text=True))
        assert r.get_json()["resourceType"] == "OperationOutcome"
    ehr = backend_token(xapp)
    status = _kick(c, ehr)
    m = _manifest(c, ehr, status, run_jobs)
    assert c.get(status, headers=bearer(tok)).status_code == 404
    assert c.get(m["output"][0]["url"].replace("http://testserver", ""), headers=bearer(tok)).status_code == 404


def test_staff_export_their_organization_and_not_anothers(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    scope = "openid fhirUser user/*.rs"
    one = user_token(xapp, "staff1", role="staff", fhir_user="Practitioner/doc1", scope=scope, organizations=("org1",))
    two = user_token(xapp, "staff2", role="staff", fhir_user="Practitioner/doc1", scope=scope, organizations=("org2",))
    status = _kick(c, one, "/fhir/Patient/$export")
    files = _download(c, one, _manifest(c, one, status, run_jobs))
    assert {r["id"] for r in files["Patient"]} == {"a", "b"}
    assert {r["id"] for r in files["Observation"]} == {f"obs-{p}-{k}" for p in "ab" for k in ("laboratory", "vital-signs")}
    m = c.get(status, headers=bearer(one)).get_json()
    assert c.get(status, headers=bearer(two)).status_code == 404
    assert c.get(m["output"][0]["url"].replace("http://testserver", ""), headers=bearer(two)).status_code == 404
    assert c.delete(status, headers=bearer(two)).status_code == 404
    own = _download(c, two, _manifest(c, two, _kick(c, two, "/fhir/Patient/$export"), run_jobs))
    assert {r["id"] for r in own["Patient"]} == {"c"}


def test_another_client_cannot_poll_download_or_cancel(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok, other = backend_token(xapp), backend_token(xapp)
    status = _kick(c, tok)
    assert c.get(status, headers=bearer(other)).status_code == 404
    m = _manifest(c, tok, status, run_jobs)
    url = m["output"][0]["url"].replace("http://testserver", "")
    assert c.get(url, headers=bearer(tok)).status_code == 200
    assert c.get(url, headers=bearer(other)).status_code == 404
    assert c.get(url).status_code == 401
    assert c.get(status, headers=bearer(other)).status_code == 404
    assert c.delete(status, headers=bearer(other)).status_code == 404
    assert c.get(status, headers=bearer(tok)).status_code == 200  # still there for its owner


def test_cancel_removes_the_export_and_its_files(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    queued = _kick(c, tok)
    assert c.delete(queued, headers=bearer(tok)).status_code == 202
    assert c.get(queued, headers=bearer(tok)).status_code == 404
    run_jobs()
    assert c.get(queued, headers=bearer(tok)).status_code == 404
    done = _kick(c, tok)
    m = _manifest(c, tok, done, run_jobs)
    url = m["output"][0]["url"].replace("http://testserver", "")
    keys = _blob_keys(xapp, done)
    store = xapp.extensions["fhirserver"].blobs
    assert keys and all(store.exists(k) for k in keys)
    assert c.delete(done, headers=bearer(tok)).status_code == 202
    run_jobs()
    assert c.get(url, headers=bearer(tok)).status_code == 404
    assert not any(store.exists(k) for k in keys)  # the files are gone from the blob store


def _blob_keys(xapp, status):  # noqa: ANN001, ANN202
    from fhirserver.operations.export_tables import bulk_export
    from sqlalchemy import select

    with xapp.extensions["fhirserver"].repo.engine.connect() as conn:
        out = orjson.loads(conn.execute(select(bulk_export.c.output).where(
            bulk_export.c.id == status.rsplit("/", 1)[1])).scalar_one())
    return {i["key"] for i in out["output"] + out["error"]}


def test_identical_exports_share_blobs_and_cancelling_one_keeps_the_other(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    one = _kick(c, tok, "/fhir/$export?_type=Patient")
    first = _manifest(c, tok, one, run_jobs)
    two = _kick(c, tok, "/fhir/$export?_type=Patient")
    second = _manifest(c, tok, two, run_jobs)
    assert _blob_keys(xapp, one) == _blob_keys(xapp, two)  # the same bytes: one blob
    assert c.delete(one, headers=bearer(tok)).status_code == 202
    run_jobs()
    store = xapp.extensions["fhirserver"].blobs
    assert all(store.exists(k) for k in _blob_keys(xapp, two))  # still there for the other export
    assert {r["id"] for r in _download(c, tok, second)["Patient"]} == {r["id"] for r in _search_all(c, tok, "Patient")}
    assert first["output"][0]["url"] != second["output"][0]["url"]


def test_export_on_the_object_store(settings, data, s3_blob_url, make_app):  # noqa: ANN001
    """The same export with `--blob-url` on an S3-compatible server: files written there,
    downloaded from there, removed from there on cancel."""
    from fhirserver.blobs.s3 import S3BlobStore

    s3app = make_app(settings.replace(insecure_no_auth=False, blob_url=s3_blob_url))
    services = s3app.extensions["fhirserver"]
    assert isinstance(services.blobs, S3BlobStore)
    try:
        c = s3app.test_client()
        tok = backend_token(s3app)
        worker = services.jobs.worker(services, threads=1)
        status = _kick(c, tok, "/fhir/$export?_type=Patient,Observation")
        m = _manifest(c, tok, status, worker.run_pending)
        files = _download(c, tok, m)
        assert {r["id"] for r in files["Patient"]} == {r["id"] for r in _search_all(c, tok, "Patient")}
        keys = _blob_keys(s3app, status)
        assert sorted(services.blobs.keys()) == sorted(keys)  # in the bucket, nowhere else
        assert c.delete(status, headers=bearer(tok)).status_code == 202
        worker.run_pending()
        assert list(services.blobs.keys()) == []
    finally:
        services.jobs.stop()


def test_type_since_and_type_filter(xapp, data, run_jobs, app):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    m = _manifest(c, tok, _kick(c, tok, "/fhir/$export?_type=Patient,Observation"), run_jobs)
    assert {o["type"] for o in m["output"]} == {"Patient", "Observation"}
    q = "/fhir/$export?_type=Observation&_typeFilter=" + \
        "Observation%3Fcategory%3Dhttp://terminology.hl7.org/CodeSystem/observation-category%7Claboratory"
    files = _download(c, tok, _manifest(c, tok, _kick(c, tok, q), run_jobs))
    assert {r["id"] for r in files["Observation"]} == {"obs-a-laboratory", "obs-b-laboratory", "obs-c-laboratory"}
    later = max(r["meta"]["lastUpdated"] for t in ("Patient", "Observation", "RelatedPerson")
                for r in _search_all(c, tok, t))
    seed(app.test_client(), [{"resourceType": "Patient", "id": "a", "active": True}])
    since = "/fhir/$export?_since=" + later.replace("+", "%2B")
    files = _download(c, tok, _manifest(c, tok, _kick(c, tok, since), run_jobs))
    assert {k: [r["id"] for r in v] for k, v in files.items() if k != "AuditEvent"} == {"Patient": ["a"]}


def test_patient_and_group_level(xapp, data, run_jobs, app):  # noqa: ANN001
    c = xapp.test_client()
    seed(app.test_client(), [{"resourceType": "Group", "id": "grp", "type": "person", "actual": True,
                              "member": [{"entity": {"reference": "Patient/b"}}]}])
    tok = backend_token(xapp)
    files = _download(c, tok, _manifest(c, tok, _kick(c, tok, "/fhir/Patient/$export"), run_jobs))
    assert "Organization" not in files and "Practitioner" not in files
    assert {r["id"] for r in files["Patient"]} == {"a", "b", "c"}
    files = _download(c, tok, _manifest(c, tok, _kick(c, tok, "/fhir/Group/grp/$export"), run_jobs))
    assert {r["id"] for r in files["Patient"]} == {"b"}
    assert {r["id"] for r in files["Observation"]} == {"obs-b-laboratory", "obs-b-vital-signs"}
    # POST kick-off with Parameters
    r = c.post("/fhir/Patient/$export", headers={**_h(tok), "Content-Type": "application/fhir+json"},
               json={"resourceType": "Parameters", "parameter": [
                   {"name": "_type", "valueString": "Patient"},
                   {"name": "patient", "valueReference": {"reference": "Patient/c"}}]})
    assert r.status_code == 202, r.get_data(as_text=True)
    files = _download(c, tok, _manifest(c, tok, r.headers["Content-Location"].replace("http://testserver", ""), run_jobs))
    assert {k: [x["id"] for x in v] for k, v in files.items()} == {"Patient": ["c"]}
    # a group an org-bound client cannot see does not exist for it
    org1 = backend_token(xapp, organization="org2")
    assert c.get("/fhir/Group/grp/$export", headers=_h(org1)).status_code == 404
    assert c.get("/fhir/Group/none/$export", headers=_h(tok)).status_code == 404


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_output_format_aliases(xapp, data, fmt):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    assert c.get("/fhir/$export", query_string={"_outputFormat": fmt}, headers=_h(tok)).status_code == 202


@pytest.mark.parametrize("query", ["_outputFormat=text/csv", "_type=NoSuchType", "_since=yesterday",
                                   "_typeFilter=Observation%3Fnosuchparam%3D1", "_typeFilter=garbage",
                                   "_elements=id"])
def test_bad_kick_off_is_400(xapp, data, query):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    r = c.get(f"/fhir/$export?{query}", headers=_h(tok))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_respond_async_is_required(xapp, data):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp)
    r = c.get("/fhir/$export", headers=bearer(tok))
    assert r.status_code == 400 and "respond-async" in r.get_data(as_text=True)


def test_capability_statement_instantiates_bulk_data(xapp):  # noqa: ANN001
    cs = xapp.test_client().get("/fhir/metadata").get_json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in cs["instantiates"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} \
        in cs["rest"][0]["operation"]
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert any(o["name"] == "export" for o in by_type["Patient"]["operation"])
    assert any(o["name"] == "export" for o in by_type["Group"]["operation"])


def test_types_the_token_cannot_read_are_reported_not_exported(xapp, data, run_jobs):  # noqa: ANN001
    c = xapp.test_client()
    tok = backend_token(xapp, scope="system/Patient.rs")
    m = _manifest(c, tok, _kick(c, tok), run_jobs)
    assert [o["type"] for o in m["output"]] == ["Patient"] and m["error"] == []
    m = _manifest(c, tok, _kick(c, tok, "/fhir/$export?_type=Patient,Observation"), run_jobs)
    assert [o["type"] for o in m["output"]] == ["Patient"]
    assert [e["type"] for e in m["error"]] == ["OperationOutcome"]
    r = c.get(m["error"][0]["url"].replace("http://testserver", ""), headers=bearer(tok))
    issue = orjson.loads(r.get_data().splitlines()[0])["issue"][0]
    assert "Observation" in issue["diagnostics"]
