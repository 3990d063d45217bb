"""What an operator relies on: probes (/healthz, /readyz), Prometheus /metrics, JSON request logs,
and `serve` failing fast with one clear line."""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from fhirserver.api.telemetry import fhir_route
from tests.conftest import LiveServer, free_port


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_healthz_and_readyz_open_and_ok(client):  # noqa: ANN001
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.data
    assert r.json["status"] == "ok"
    assert r.json["checks"]["database"] == "ok" and r.json["checks"]["data_dir"] == "ok"
    assert r.json["checks"]["jobs"] == "ok"  # the notify outbox is there and readable


def test_readyz_503_when_database_unreachable(settings, tmp_path, make_app):  # noqa: ANN001
    closed = free_port()  # nothing listens there
    app = make_app(settings.replace(database_url=f"postgresql://postgres@127.0.0.1:{closed}/none",
                                    data_dir=tmp_path))
    c = app.test_client()
    assert c.get("/healthz").status_code == 200  # the process itself is alive
    r = c.get("/readyz")
    assert r.status_code == 503
    body = json.loads(r.data)
    assert body["resourceType"] == "OperationOutcome"
    failed = [i["expression"][0] for i in body["issue"]]
    assert failed == ["database"]
    assert str(closed) in body["issue"][0]["diagnostics"]


def test_readyz_503_when_data_folder_not_writable(settings, tmp_path, make_app):  # noqa: ANN001
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app = make_app(settings.replace(data_dir=blocker / "var"))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert [i["expression"][0] for i in json.loads(r.data)["issue"]] == ["data_dir"]


def test_metrics_parse_and_count_a_read(client):  # noqa: ANN001
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json["id"]
    before = client.get("/metrics")
    assert before.status_code == 200 and before.content_type.startswith("text/plain")
    name, labels = "fhirserver_http_requests_total", {"method": "GET", "route": "/fhir/Patient/{id}",
                                                      "status": "200"}
    n0 = _sample(before.data.decode(), name, **labels)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    text = client.get("/metrics").data.decode()
    assert _sample(text, name, **labels) == n0 + 2
    assert _sample(text, "fhirserver_http_request_duration_seconds_count", method="GET",
                   route="/fhir/Patient/{id}") >= 2
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"fhirserver_db_pool_size", "fhirserver_db_pool_checked_out", "fhirserver_queue_depth",
            "fhirserver_dicom_associations", "fhirserver_dicom_instances"} <= families
    assert _sample(text, "fhirserver_db_pool_size") > 0


def test_route_templates_keep_label_values_bounded():
    assert fhir_route("/fhir/Patient/123") == "/fhir/Patient/{id}"
    assert fhir_route("/fhir/Patient/123/_history/4") == "/fhir/Patient/{id}/_history/{vid}"
    assert fhir_route("/fhir/Patient/123/$everything") == "/fhir/Patient/{id}/$everything"
    assert fhir_route("/fhir/Patient/123/Observation") == "/fhir/Patient/{id}/Observation"
    assert fhir_route("/fhir/NoSuchType/1") == "/fhir/{type}/{id}"
    assert fhir_route("/fhir") == "/fhir"


def test_one_json_log_line_per_request(settings, caplog, tmp_path, make_app):  # noqa: ANN001
    app = make_app(settings.replace(log_requests=True))
    c = app.test_client()
    with caplog.at_level(logging.INFO, logger="fhirserver.request"):
        r = c.get("/fhir/Patient?name=nobody")
    assert r.status_code == 200
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "fhirserver.request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["route"] == "/fhir/Patient" and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and "client_id" in line


def test_no_request_log_when_switched_off(settings, caplog, make_app):  # noqa: ANN001
    app = make_app(settings.replace(log_requests=False))
    with caplog.at_level(logging.INFO, logger="fhirserver.request"):
        app.test_client().get("/fhir/Patient")
    assert not [r for r in caplog.records if r.name == "fhirserver.request"]


def test_metrics_add_up_across_gunicorn_workers(database_url, tmp_path):  # noqa: ANN001
    (tmp_path / "live").mkdir()
    server = LiveServer(database_url, tmp_path / "live", workers=2)
    try:
        s = requests.Session()
        for _ in range(20):  # new connections: spread over both workers
            assert requests.get(server.root + "/healthz", timeout=10).status_code == 200
        text = s.get(server.root + "/metrics", timeout=10).text
        assert _sample(text, "fhirserver_http_requests_total", route="/healthz", status="200") == 20
        assert requests.get(server.root + "/readyz", timeout=10).status_code == 200
        log = server.log_path.read_text()
        assert any(json.loads(l).get("route") == "/healthz" for l in log.splitlines() if l.startswith("{"))
    finally:
        server.stop()
    metrics_dir = tmp_path / "live" / "metrics"
    assert metrics_dir.is_dir()  # under the data folder, emptied at the next start


def test_serve_exits_with_one_line_when_dicom_port_taken(database_url, tmp_path):  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(free_port()), "--dicom-port",
             str(port), "--insecure-no-auth", "--data-dir", str(tmp_path), "--database-url", database_url],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"cannot listen for DICOM on 127.0.0.1:{port}" in proc.stderr


def test_serve_exits_with_one_line_when_database_unreachable(tmp_path):  # noqa: ANN001
    proc = subprocess.run(
        [sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(free_port()), "--dicom-port", "0",
         "--insecure-no-auth", "--data-dir", str(tmp_path),
         "--database-url", f"postgresql://postgres@127.0.0.1:{free_port()}/none"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "fhirserver: error: database" in proc.stderr


def test_readme_transaction_example_bundle_posts(client):  # noqa: ANN001
    bundle = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bundle.json"
    r = client.post("/fhir", data=bundle.read_bytes(), content_type="application/fhir+json")
    assert r.status_code == 200, r.data
    body = json.loads(r.data)
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in body["entry"]] == ["201", "201"]


def test_openapi_from_capability_statement_and_offline_docs(client):  # noqa: ANN001
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    read = doc["paths"]["/fhir/Patient/{id}"]["get"]
    assert read["parameters"][0]["name"] == "id"
    search = {p["name"] for p in doc["paths"]["/fhir/Patient"]["get"]["parameters"]}
    assert {"name", "birthdate", "identifier"} <= search
    assert "/readyz" in doc["paths"] and "/metrics" in doc["paths"]
    page = client.get("/docs")
    assert page.status_code == 200 and b"/docs/static/swagger-ui-bundle.js" in page.data
    assert b"http" not in page.data.split(b"<body>")[1]  # every asset from this server, no CDN
    js = client.get("/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.data) > 100_000
