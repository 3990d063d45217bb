"""A request id ties a client's request to its response, its log line and its AuditEvents:
X-Request-ID is kept when it is a safe token, else one is made; either way it is echoed."""
from __future__ import annotations

import json
import logging

from test_smart_oauth import _patient_session

BALP = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


def _tagged(open_client, rid: str) -> list[dict]:  # noqa: ANN001
    b = open_client.get(f"/fhir/AuditEvent?entity-name={rid}&_count=50").get_json()
    out = []
    for e in b.get("entry", []):
        res = e["resource"]
        if res["resourceType"] != "AuditEvent":
            continue
        ids = [x["what"]["identifier"]["value"] for x in res.get("entity", [])
               if (x.get("type") or {}).get("system") == BALP and x["type"]["code"] == "XrequestId"]
        if ids == [rid]:
            out.append(res)
    return out


def test_request_id_echoed_and_in_the_audit_event(sapp, engine, open_client) -> None:  # noqa: ANN001
    c, h = _patient_session(sapp, engine, open_client)
    r = c.get("/fhir/Patient/a", headers={**h, "X-Request-ID": "trace-abc-123"})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == "trace-abc-123"
    r2 = c.get("/fhir/Observation?patient=Patient/a", headers=h)  # no id offered: one is made
    made = r2.headers["X-Request-ID"]
    assert made and made != "trace-abc-123"
    sapp.extensions["fhirserver"].audit.flush()
    (read,) = _tagged(open_client, "trace-abc-123")
    assert read["subtype"][0]["code"] == "read" and read["agent"][0]["who"]["reference"] == "Patient/a"
    (search,) = _tagged(open_client, made)
    assert search["subtype"][0]["code"] == "search-type"


def test_unsafe_request_id_is_replaced(sapp, engine, open_client) -> None:  # noqa: ANN001
    c = sapp.test_client()
    for offered in ("has spaces and\ttabs", "x" * 500, "quote\"d", "<script>"):
        r = c.get("/healthz", headers={"X-Request-ID": offered})
        assert r.status_code == 200
        echoed = r.headers["X-Request-ID"]
        assert echoed != offered and len(echoed) == 32 and echoed.isalnum()


def test_request_id_in_the_log_line_and_on_errors(settings, caplog) -> None:  # noqa: ANN001
    from tests.conftest import built_app

    with built_app(settings.replace(log_requests=True)) as app, \
            caplog.at_level(logging.INFO, logger="fhirserver.request"):
        r = app.test_client().get("/fhir/Patient?birthdate=1985-13-45", headers={"X-Request-ID": "log-line-7"})
    assert r.status_code == 400 and r.headers["X-Request-ID"] == "log-line-7"
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "fhirserver.request"]
    (line,) = [x for x in lines if x.get("request_id") == "log-line-7"]
    assert line["method"] == "GET" and line["route"] == "/fhir/Patient" and line["status"] == 400
    assert isinstance(line["duration_ms"], float)
