"""`fhirserver serve` runs export jobs in its own worker processes; `fhirserver worker` runs them
alone. Real processes, real HTTP."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import text

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow


def _wait_manifest(status_url: str, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = requests.get(status_url, timeout=10)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["Retry-After"]
        time.sleep(0.2)
    raise AssertionError("the export did not finish in time")


def _seed(base: str) -> None:
    for i in range(30):
        r = requests.put(f"{base}/Patient/live{i}", json={"resourceType": "Patient", "id": f"live{i}"},
                         headers={"Content-Type": "application/fhir+json"}, timeout=10)
        assert r.status_code in (200, 201), r.text


def test_serve_runs_the_export_in_process(app, database_url, tmp_path):  # noqa: ANN001
    with app.extensions["fhirserver"].repo.engine.begin() as c:
        c.execute(text("DELETE FROM job"))
    server = LiveServer(database_url, tmp_path, workers=2)
    try:
        _seed(server.base)
        r = requests.get(server.base + "/$export?_type=Patient", headers={"Prefer": "respond-async"}, timeout=10)
        assert r.status_code == 202, r.text
        m = _wait_manifest(r.headers["Content-Location"])
        assert m["output"] == [{"type": "Patient", "url": m["output"][0]["url"], "count": 30}]
        body = requests.get(m["output"][0]["url"], timeout=10)
        assert body.headers["Content-Type"] == "application/fhir+ndjson" and len(body.text.splitlines()) == 30
    finally:
        server.stop()


def test_worker_command_runs_jobs_of_a_server_without_workers(app, database_url, tmp_path):  # noqa: ANN001
    with app.extensions["fhirserver"].repo.engine.begin() as c:
        c.execute(text("DELETE FROM job"))
    (tmp_path / "srv").mkdir()
    os.environ["FHIRSERVER_JOB_THREADS"] = "0"  # the HTTP server runs no jobs itself
    try:
        server = LiveServer(database_url, tmp_path / "srv", workers=1)
    finally:
        del os.environ["FHIRSERVER_JOB_THREADS"]
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=database_url, FHIRSERVER_DATA_DIR=str(tmp_path / "srv"))
    worker = None
    try:
        _seed(server.base)
        r = requests.get(server.base + "/$export?_type=Patient", headers={"Prefer": "respond-async"}, timeout=10)
        status = r.headers["Content-Location"]
        time.sleep(1.0)
        assert requests.get(status, timeout=10).status_code == 202  # nobody runs it yet
        worker = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "worker", "--threads", "1"], env=env,
                                  stderr=open(tmp_path / "worker.log", "wb"))
        m = _wait_manifest(status)
        assert m["output"][0]["count"] == 30
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        server.stop()
