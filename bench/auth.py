"""The cost of authorization: reads with a bearer token against the same reads without auth.

Two `fhirserver serve` processes on one fresh PostgreSQL database, same gunicorn configuration:
one with `--insecure-no-auth`, one with auth on. The same Patients are read by the same load
generator (8 keep-alive connections), phases alternating. The token is a `system/*.rs` token
of a backend client: the full per-request path (token lookup, revocation check, scopes, policy). Prints a table and a last JSON line.

    .venv/bin/python -m bench.auth        # BENCH_SECONDS=4 for a quicker run
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.run import (
    BALANCE, CLIENTS, DEFAULT_PG, THREADS, WORKERS, CpuMeter, Phase, Proc, Scratch, backend_pids, dumps, log,
    patient,
)

TARGET = 0.85
N_PATIENTS = 2000


def _serve(name: str, url: str, tmp: Path, env: dict[str, str], auth: bool) -> tuple[Proc, int]:
    port = loadgen.free_port()
    argv = [sys.executable, "-m", "fhirserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(WORKERS), "--threads", str(THREADS), "--dicom-port", "0",
            "--database-url", url, "--data-dir", str(tmp / name)]
    if not auth:
        argv.append("--insecure-no-auth")
    proc = Proc(name, argv, env, tmp)
    proc.wait_http(f"http://127.0.0.1:{port}/fhir/metadata")
    return proc, port


def _phase(name: str, port: int, proc: Proc, admin_url: str, dbname: str, make: Any, seconds: float) -> Phase:
    meter = CpuMeter(proc.wait_workers(port, WORKERS), backend_pids(admin_url, dbname))
    with meter:
        res = loadgen.run("127.0.0.1", port, loadgen.random_pick(make, N_PATIENTS), connections=CLIENTS,
                          duration=seconds, warmup=1.0, balance_pids=meter.app_pids if BALANCE else None)
    return Phase(name, res, meter)


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "6"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL", DEFAULT_PG)
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    with ExitStack() as stack:
        scratch = Scratch(admin_url)
        stack.callback(scratch.drop_all)
        dbname = f"fhirbench_auth_{os.getpid()}"
        url = scratch.create(dbname)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        open_proc, open_port = _serve("open", url, tmp, env, auth=False)
        stack.callback(open_proc.stop)
        secure_proc, secure_port = _serve("secure", url, tmp, env, auth=True)
        stack.callback(secure_proc.stop)

        import requests

        ids = [f"bench-{i}" for i in range(N_PATIENTS)]
        with requests.Session() as s:
            for i, pid in enumerate(ids):
                body = {**patient(i), "id": pid}
                r = s.put(f"http://127.0.0.1:{open_port}/fhir/Patient/{pid}", data=dumps(body),
                          headers={"Content-Type": "application/fhir+json"})
                r.raise_for_status()
        from smart_auth import store
        from fhirserver.storage import make_engine

        engine = make_engine(url)
        system_tok, _ = store.save_token(engine, kind="access", grant_id=uuid.uuid4().hex, client_id="bench-backend",
                                         user_pk=None, scope="system/*.rs", context={"role": "system"},
                                         lifetime=3600)
        engine.dispose()
        host = "127.0.0.1"

        def read_open(i: int) -> bytes:
            return loadgen.build_request("GET", f"/fhir/Patient/{ids[i]}", host)

        def read_token(i: int) -> bytes:
            return loadgen.build_request("GET", f"/fhir/Patient/{ids[i]}", host,
                                         extra=f"Authorization: Bearer {system_tok}\r\n")

        phases: dict[str, list[Phase]] = {"open": [], "token": []}
        for _round in range(2):
            phases["open"].append(_phase("read no-auth", open_port, open_proc, admin_url, dbname, read_open, seconds))
            phases["token"].append(_phase("read bearer", secure_port, secure_proc, admin_url, dbname, read_token,
                                          seconds))
        from bench.run import merge

        opened, tokened = merge(phases["open"]), merge(phases["token"])
        errors = tokened.res.errors + sum(v for k, v in tokened.res.statuses.items() if k != 200)
        ratio = tokened.rps / opened.rps if opened.rps else 0.0
        print(f"{'phase':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for ph in (opened, tokened):
            summ = ph.summary()
            print(f"{ph.name:14} {ph.rps:8.0f} {summ.get('p50_ms', 0):8.2f} {summ.get('p99_ms', 0):8.2f}")
        print(json.dumps({"auth_read_ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET,
                          "no_auth_rps": round(opened.rps), "bearer_rps": round(tokened.rps), "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
