"""`serve --log-level`: WARNING drops the per-request INFO lines; what remains is JSON lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from tests.conftest import free_port


def test_serve_log_level_warning_has_no_request_lines(database_url, tmp_path):  # noqa: ANN001
    port = free_port()
    log_path = tmp_path / "server.log"
    env = dict(os.environ)
    env.pop("FHIRSERVER_LOG_LEVEL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(port), "--dicom-port", "0",
         "--workers", "1", "--insecure-no-auth", "--log-level", "WARNING", "--data-dir", str(tmp_path),
         "--database-url", database_url], stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"), env=env)
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)
        r = requests.get(f"http://127.0.0.1:{port}/fhir/Patient?nosuch=1", headers={"X-Request-ID": "quiet-1"},
                         timeout=10)
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "quiet-1"
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if json.loads(line).get("event") == "http"]
    for line in lines:  # whatever is logged is one JSON object per line
        assert json.loads(line)["level"] in ("WARNING", "ERROR", "CRITICAL")
