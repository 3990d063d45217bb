"""Reads by id answered before Flask (fhirserver.api.lean) say exactly what the full path says,
and every answer that is not a plain 200 still comes from the full path."""
from __future__ import annotations

FHIR = {"Content-Type": "application/fhir+json"}


def _headers(r) -> dict[str, str]:  # noqa: ANN001
    return {k: v for k, v in r.headers.items() if k != "X-Request-ID"}


def test_lean_read_and_vread_match_the_full_path(client, served):  # noqa: ANN001
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Ünïcode"}]},
                      headers=FHIR).json["id"]
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True}, headers=FHIR)
    for path in (f"/fhir/Patient/{pid}", f"/fhir/Patient/{pid}/_history/1", f"/fhir/Patient/{pid}/_history/2"):
        served.clear()
        lean = client.get(path, headers={"X-Request-ID": "abc-123"})
        full = client.get(path + "?_format=json")  # a query string always takes the full path
        assert served == [True, False]
        assert lean.status_code == full.status_code == 200
        assert lean.data == full.data
        assert _headers(lean) == _headers(full)
        assert lean.headers["X-Request-ID"] == "abc-123"
    assert client.get(f"/fhir/Patient/{pid}").json["active"] is True
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json.get("active") is None
    head = client.head(f"/fhir/Patient/{pid}")
    assert head.status_code == 200 and head.data == b"" and head.headers["ETag"] == 'W/"2"'


def test_other_answers_come_from_the_full_path(client, served):  # noqa: ANN001
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json["id"]
    served.clear()
    r = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and served == [False]
    served.clear()
    assert client.get("/fhir/Patient/missing").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/_history/9").status_code == 404
    assert client.get(f"/fhir/Nonsense/{pid}").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}", headers={"Accept": "application/fhir+xml"}).data.startswith(b"<")
    assert served == [False] * 4
    client.delete(f"/fhir/Patient/{pid}")
    served.clear()
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 410 and served == [False]
    assert r.json["resourceType"] == "OperationOutcome"


def test_audit_buffer_is_bounded(app, client, monkeypatch):  # noqa: ANN001
    """Past its bound the buffer is written by the request that fills it, never dropped."""
    from fhirserver import audit as audit_mod

    trail = app.extensions["fhirserver"].audit
    trail.flush()
    monkeypatch.setattr(audit_mod, "MAX_QUEUED", 3)
    monkeypatch.setattr(trail, "interval", 3600.0)  # the writer thread stays asleep
    before = client.get("/fhir/AuditEvent?_summary=count").json["total"]
    for i in range(3):
        trail.record(who={"client_id": "x"}, action="R", interaction="read", references=[f"Patient/p{i}"])
    assert len(trail._queue) == 0  # the third record wrote the backlog before returning
    assert client.get("/fhir/AuditEvent?_summary=count").json["total"] == before + 3
