"""The cost of authorization: reads with bearer tokens against the same reads without auth.

Two `fhirserver serve` processes on one fresh PostgreSQL database, same gunicorn configuration:
one with `--insecure-no-auth`, one with auth on. The same Patients are read by the same load
generator (8 keep-alive connections), phases alternating. The tokens are real: a Backend
Services client (`private_key_jwt`, `system/*.rs`) registered on the database obtains
`BENCH_TOKENS` (default 300) distinct access tokens from `/auth/token`, and every request
carries one of them at random with one of `N_PATIENTS` Patients at random, so the token cache
and the statement cache see a realistic spread rather than one hot entry. Any answer other than
200 fails the run (exit 1). Prints a table and a last JSON line.

    .venv/bin/python -m bench.auth        # BENCH_SECONDS=4 for a quicker run
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.harness import (
    BALANCE, CLIENTS, DEFAULT_PG, THREADS, WORKERS, CpuMeter, Phase, Proc, Scratch, backend_pids, dumps, log,
    patient, pg_settings,
)

TARGET = 0.85
N_PATIENTS = 2000
LOAD_BATCH = 200  # Patients per batch Bundle while loading


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


def _tokens(url: str, port: int, count: int) -> list[str]:
    """`count` access tokens of one Backend Services client, each from the token endpoint
    (client_credentials with a fresh signed assertion: RFC 7523, one jti per request)."""
    import requests
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from fhirserver.storage import make_engine
    from smart_auth import store

    key = RSAKey.generate_key(2048, parameters={"kid": "bench"}, private=True)
    engine = make_engine(url)
    client = store.add_client(engine, name="bench backend", auth_method="private_key_jwt",
                              jwks={"keys": [key.as_dict(private=False)]}, scope="system/*.rs")
    engine.dispose()
    cid, token_url = client["client_id"], f"http://127.0.0.1:{port}/auth/token"
    out = []
    with requests.Session() as s:
        for _ in range(count):
            t = int(time.time())
            assertion = jwt.encode({"alg": "RS384", "kid": "bench", "typ": "JWT"},
                                   {"iss": cid, "sub": cid, "aud": token_url, "exp": t + 240, "iat": t,
                                    "jti": uuid.uuid4().hex}, key, algorithms=["RS384"])
            r = s.post(token_url, data={
                "grant_type": "client_credentials", "scope": "system/*.rs",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion})
            if r.status_code != 200:
                raise RuntimeError(f"the token endpoint answered {r.status_code}: {r.text[:300]}")
            out.append(r.json()["access_token"])
    return out


def _phase(name: str, port: int, proc: Proc, admin_url: str, dbname: str, make: Any, seconds: float,
           spread: int) -> Phase:
    meter = CpuMeter(proc.wait_workers(port, WORKERS), backend_pids(admin_url, dbname))
    with meter:
        res = loadgen.run("127.0.0.1", port, loadgen.random_pick(make, spread), connections=CLIENTS,
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
        settings = pg_settings(url)
        log("PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        open_proc, open_port = _serve("open", url, tmp, env, auth=False)
        stack.callback(open_proc.stop)
        secure_proc, secure_port = _serve("secure", url, tmp, env, auth=True)
        stack.callback(secure_proc.stop)

        import requests

        ids = [f"bench-{i}" for i in range(N_PATIENTS)]
        with requests.Session() as s:
            for start in range(0, N_PATIENTS, LOAD_BATCH):
                entries = [{"resource": {**patient(i), "id": ids[i]},
                            "request": {"method": "PUT", "url": f"Patient/{ids[i]}"}}
                           for i in range(start, min(start + LOAD_BATCH, N_PATIENTS))]
                r = s.post(f"http://127.0.0.1:{open_port}/fhir", data=dumps(
                    {"resourceType": "Bundle", "type": "batch", "entry": entries}),
                    headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
                r.raise_for_status()
                bad = [e["response"]["status"] for e in r.json().get("entry", [])
                       if not e["response"]["status"].startswith("20")]
                if bad:
                    raise RuntimeError(f"loading Patients failed: {bad[:3]}")
        tokens = _tokens(url, secure_port, int(os.environ.get("BENCH_TOKENS", "300")))
        log(f"{len(tokens)} access tokens from /auth/token; {N_PATIENTS} Patients")
        host = "127.0.0.1"
        n_tok = len(tokens)

        def read_open(i: int) -> bytes:
            return loadgen.build_request("GET", f"/fhir/Patient/{ids[i % N_PATIENTS]}", host)

        def read_token(i: int) -> bytes:
            return loadgen.build_request("GET", f"/fhir/Patient/{ids[i % N_PATIENTS]}", host,
                                         extra=f"Authorization: Bearer {tokens[i // N_PATIENTS]}\r\n")

        # Warm-up, not measured: every token checked once by each worker (its first use costs a
        # database check; afterwards it is re-checked every CHECK_TTL). Measuring right after 300
        # tokens were issued would time 600 first checks, not the steady state of tokens that live
        # for an hour; the cost of those checks is printed apart.
        warm = [read_token(k * N_PATIENTS + (k * 7 + j) % N_PATIENTS) for k in range(n_tok) for j in range(8)]
        t0 = time.perf_counter()
        wres = loadgen.run("127.0.0.1", secure_port, loadgen.cycle(warm), connections=CLIENTS,
                           max_requests=len(warm), duration=600.0, warmup=0.0, balance_pids=secure_proc.wait_workers(secure_port, WORKERS)
                           if BALANCE else None)
        warm_s = time.perf_counter() - t0
        log(f"warm-up: {len(warm)} requests ({n_tok} tokens x 8) in {warm_s:.1f}s; statuses {wres.statuses}")
        phases: dict[str, list[Phase]] = {"open": [], "token": []}
        for _round in range(2):
            phases["open"].append(_phase("read no-auth", open_port, open_proc, admin_url, dbname, read_open,
                                         seconds, N_PATIENTS * n_tok))
            phases["token"].append(_phase("read bearer", secure_port, secure_proc, admin_url, dbname, read_token,
                                          seconds, N_PATIENTS * n_tok))
        from bench.harness import merge

        opened, tokened = merge(phases["open"]), merge(phases["token"])
        errors = sum(res.errors + sum(v for k, v in res.statuses.items() if k != 200)
                     for res in (opened.res, tokened.res, wres))
        ratio = tokened.rps / opened.rps if opened.rps else 0.0
        # CPU per request (workers + PostgreSQL backends) is the figure to read on a shared
        # machine: req/s moves with whatever else runs, CPU per request much less
        cpu = {k: ph.cpu.per_request(ph.res.total_completed) for k, ph in (("no_auth", opened), ("bearer", tokened))}
        own = {k: round(v["app"] + v["db"], 3) for k, v in cpu.items()}
        cpu_ratio = round(own["no_auth"] / own["bearer"], 3) if own["bearer"] else 0.0
        print(f"{'phase':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms app+db':>14}")
        for key, ph in (("no_auth", opened), ("bearer", tokened)):
            summ = ph.summary()
            print(f"{ph.name:14} {ph.rps:8.0f} {summ.get('p50_ms', 0):8.2f} {summ.get('p99_ms', 0):8.2f} "
                  f"{cpu[key]['app']:>7.3f}+{cpu[key]['db']:<6.3f}")
        print(json.dumps({"auth_read_ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET,
                          "cpu_ms_per_req": cpu, "cpu_ratio": cpu_ratio, "postgres": settings,
                          "no_auth_rps": round(opened.rps), "bearer_rps": round(tokened.rps), "tokens": n_tok,
                          "patients": N_PATIENTS, "warmup_requests": len(warm), "warmup_seconds": round(warm_s, 2), "errors": errors,
                          "statuses": {"no_auth": opened.res.statuses, "bearer": tokened.res.statuses}}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
