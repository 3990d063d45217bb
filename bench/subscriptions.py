"""Subscriptions part of the bench: time from a C-STORE association's release (storescu's exit)
to the rest-hook notification of the new ImagingStudy, p50/p95 (target p95 < 1 s).

Runs `fhirserver serve --insecure-no-auth` (HTTP workers with their job threads, the DICOM node)
on a fresh PostgreSQL database (FHIRSERVER_BENCH_DATABASE_URL names the server, as bench.run;
BENCH_SUB_SQLITE=1 uses the embedded SQLite file instead), subscribes a loopback receiver to
the ImagingStudy topic filtered on one patient, then sends BENCH_SUB_ROUNDS (default 30) studies
of 4 instances each, one association at a time, and waits for each notification.
Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.dicom import DCMTK_ENV, _make, _port, _wait_echo

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
TOPIC = "http://fhirserver.local/SubscriptionTopic/ImagingStudy-new-or-updated"
EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TARGET_P95 = 1.0


class _Receiver:
    """Arrival time (perf_counter) of each notified study, by StudyInstanceUID."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.handshake = threading.Event()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                t = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                for e in body.get("entry", [])[1:]:
                    for ident in (e.get("resource") or {}).get("identifier", []):
                        if str(ident.get("value", "")).startswith("urn:oid:"):
                            recv.arrivals.setdefault(ident["value"][8:], t)
                kind = next((p.get("valueCode") for p in body["entry"][0]["resource"]["parameter"]
                             if p["name"] == "type"), None)
                if kind == "handshake":
                    recv.handshake.set()

            def log_message(self, *_a: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _request(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def _database(tmpd: Path) -> tuple[str, Any]:
    if os.environ.get("BENCH_SUB_SQLITE") == "1":
        return f"sqlite:///{tmpd / 'bench.sqlite3'}", lambda: None
    from sqlalchemy import create_engine, text

    server = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL", DEFAULT_PG)
    name = f"fhirbench_subs_{os.getpid()}"
    admin = create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return f"{server.rsplit('/', 1)[0]}/{name}", drop


def main() -> int:
    if shutil.which("storescu") is None:
        print("storescu (dcmtk) is needed: make dcmtk", file=sys.stderr)
        return 1
    rounds = int(os.environ.get("BENCH_SUB_ROUNDS", "30"))
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        db_url, drop = _database(tmpd)
        port, dicom_port = _port(), _port()
        env = dict(os.environ, FHIRSERVER_DATABASE_URL=db_url, FHIRSERVER_DATA_DIR=str(tmpd / "var"),
                   FHIRSERVER_DICOM_REJECT_UNKNOWN="0", FHIRSERVER_LOG_REQUESTS="0")
        log_path = tmpd / "server.log"
        server = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth",
                                   "--port", str(port), "--dicom-port", str(dicom_port), "--workers", "2"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
        base = f"http://127.0.0.1:{port}/fhir"
        receiver = _Receiver()
        try:
            deadline = time.time() + 90
            while True:
                try:
                    _request("GET", base + "/metadata")
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise RuntimeError("server did not start: " + log_path.read_text()[-2000:])
                    time.sleep(0.3)
            _wait_echo(dicom_port, "FHIRSERVER", server, timeout=90)
            _request("PUT", base + "/Patient/bench", {"resourceType": "Patient", "id": "bench",
                                                      "identifier": [{"system": "urn:mrn", "value": "BENCH-1"}]})
            _request("POST", base + "/Subscription", {
                "resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPIC,
                "_criteria": {"extension": [{"url": EXT + "backport-filter-criteria",
                                             "valueString": "ImagingStudy?patient=Patient/bench"}]},
                "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": EXT + "backport-payload-content",
                                                        "valueCode": "full-resource"}]}}})
            if not receiver.handshake.wait(60):
                raise RuntimeError("no handshake: " + log_path.read_text()[-2000:])
            studies = [_make(tmpd / f"s{i}", 4) for i in range(rounds + 2)]
            latencies = []
            for i, (uid, paths) in enumerate(studies):
                proc = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "FHIRSERVER", "127.0.0.1",
                                       str(dicom_port), *map(str, paths)], env=DCMTK_ENV, capture_output=True)
                released = time.perf_counter()
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.decode()[-500:])
                deadline = time.time() + 30
                while uid not in receiver.arrivals:
                    if time.time() > deadline:
                        raise RuntimeError(f"no notification for study {uid}: " + log_path.read_text()[-2000:])
                    time.sleep(0.005)
                if i >= 2:  # two warm-up studies: no cold start in the figures
                    latencies.append(receiver.arrivals[uid] - released)
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
            receiver.server.shutdown()
            drop()
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print(f"subscriptions: C-STORE release -> rest-hook notification over {len(latencies)} studies "
          f"({'SQLite' if db_url.startswith('sqlite') else 'PostgreSQL'}): p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms (target p95 < {TARGET_P95 * 1000:.0f} ms)")
    print(json.dumps({"bench": "subscriptions", "studies": len(latencies), "p50_s": round(p50, 4),
                      "p95_s": round(p95, 4), "max_s": round(latencies[-1], 4), "target_p95_s": TARGET_P95,
                      "ok": p95 < TARGET_P95, "run": uuid.uuid4().hex[:8]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
