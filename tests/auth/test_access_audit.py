"""Every authenticated access to patient data leaves an AuditEvent the patient can find."""
from __future__ import annotations

from test_smart_oauth import _patient_session


def _events(open_client, query: str) -> list[dict]:  # noqa: ANN001
    b = open_client.get(f"/fhir/AuditEvent?{query}&_count=200").get_json()
    return [e["resource"] for e in b.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]


def test_reads_searches_and_writes_are_audited(sapp, engine, open_client) -> None:  # noqa: ANN001
    c, h = _patient_session(sapp, engine, open_client)
    assert c.get("/fhir/Patient/a", headers=h).status_code == 200
    assert c.get("/fhir/Observation?patient=Patient/a", headers=h).status_code == 200
    assert c.get("/fhir/Patient/b", headers=h).status_code == 404   # refused: nothing read
    trail = sapp.extensions["fhirserver"].audit
    trail.flush()  # the writer thread may have written some already (every half second)
    events = [e for e in _events(open_client, "patient=Patient/a") if e["type"]["code"] == "rest"]
    kinds = {e["subtype"][0]["code"] for e in events}
    assert {"read", "search-type"} <= kinds
    read = next(e for e in events if e["subtype"][0]["code"] == "read")
    assert read["action"] == "R" and read["agent"][0]["who"]["reference"] == "Patient/a"
    search = next(e for e in events if e["subtype"][0]["code"] == "search-type")
    assert any(ent["what"].get("reference", "").startswith("Observation/") for ent in search["entity"])
    assert not [e for e in _events(open_client, "patient=Patient/b") if e["type"]["code"] == "rest"]
