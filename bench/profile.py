"""Where a request's CPU goes: the server app in-process under cProfile, on a scratch PostgreSQL DB.

    .venv/bin/python -m bench.profile read [N]        # or search, create, update, ingest, bearer-read
    BENCH_PROFILE_SORT=tottime .venv/bin/python -m bench.profile create

The Flask test client replaces gunicorn and the network (both identical for the bare-Flask
reference), so what is printed is the server's own cost per request: routing, FHIR handling,
validation, SQLAlchemy, psycopg, logging. Also prints CPU ms/request without the profiler, next
to the same figure for the bare Flask endpoint of `bench.bare_app`.

`bearer-read` reads with real access tokens (a Backend Services client, `system/*.rs`, tokens
from the token endpoint) on the app with auth on, and writes the audit trail in the profiled
thread every 100 reads, so the audit writer's share shows in the same profile.
"""
from __future__ import annotations

import cProfile
import io
import logging
import os
import pstats
import sys
import sysconfig
import time
import uuid
from typing import Any, Callable

from bench import bare_app
from bench.harness import DEFAULT_PG, SYNTHEA_DIR, Scratch, dumps, patient

HDR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def cpu_per_call(fn: Callable[[int], None], n: int) -> float:
    fn(min(n, 200))  # warm caches, prepared statements, pools
    t0 = time.process_time()
    fn(n)
    return 1000 * (time.process_time() - t0) / n


def main(argv: list[str]) -> int:
    op = argv[0] if argv else "read"
    n = int(argv[1]) if len(argv) > 1 else (25 if op == "ingest" else 2000)
    sort = os.environ.get("BENCH_PROFILE_SORT", "cumulative")
    admin = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL") or DEFAULT_PG
    from fhirserver.app import create_app
    from fhirserver.config import Settings
    from fhirserver.storage import make_engine, upgrade

    logging.getLogger("fhirserver.request").addHandler(logging.NullHandler())
    logging.getLogger("fhirserver.request").propagate = False  # formatted, not written
    scratch = Scratch(admin)
    try:
        url = scratch.create(f"fhirbench_prof_{os.getpid()}")
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        app = create_app(Settings(database_url=url, insecure_no_auth=True))
        c = app.test_client()
        bodies = [dumps(patient(i)) for i in range(64)]
        ids = [c.post("/fhir/Patient", data=bodies[i % 64], headers=HDR).json["id"] for i in range(200)]
        headers = [HDR]
        audit_cpu = [0.0]  # CPU seconds spent writing the audit trail (bearer-read)
        if op == "bearer-read":
            app = create_app(Settings(database_url=url, base_url="http://localhost"))
            c = app.test_client()
            headers = [{**HDR, "Authorization": f"Bearer {t}"} for t in _tokens(url, c, 50)]
            audit = app.extensions["fhirserver"].audit
            audit.interval = 3600.0  # written below, in the profiled thread
        bundles = [p.read_bytes() for p in sorted(SYNTHEA_DIR.glob("*.json")) if "Information" not in p.name]

        def run(k: int) -> None:
            for i in range(k):
                if op == "read":
                    r = c.get(f"/fhir/Patient/{ids[i % len(ids)]}", headers=HDR)
                elif op == "bearer-read":
                    r = c.get(f"/fhir/Patient/{ids[i % len(ids)]}", headers=headers[i % len(headers)])
                    if i % 100 == 99:
                        t0 = time.process_time()
                        audit.flush()
                        audit_cpu[0] += time.process_time() - t0
                elif op == "create":
                    r = c.post("/fhir/Patient", data=bodies[i % 64], headers=HDR)
                elif op == "update":
                    rid = ids[i % len(ids)]
                    r = c.put(f"/fhir/Patient/{rid}", data=dumps({**patient(i), "id": rid}), headers=HDR)
                elif op == "search":  # one match: the search path's fixed cost
                    r = c.get(f"/fhir/Patient?identifier=http://hospital.example.org/mrn|MRN-{100000 + i % 64}",
                              headers=HDR)
                elif op == "ingest":
                    r = c.post("/fhir", data=bundles[i % len(bundles)], headers={**HDR, "Prefer": "return=minimal"})
                else:
                    raise SystemExit(f"unknown operation {op} (read, search, create, update, ingest, bearer-read)")
                if r.status_code >= 300:
                    raise RuntimeError(f"{op}: HTTP {r.status_code} {r.data[:300]!r}")

        per = cpu_per_call(run, n)
        audit_per = 1000 * audit_cpu[0] / (n + min(n, 200))
        bare = bare_app.create_app(b"{}" * 590, "application/fhir+json; charset=utf-8", {"ETag": 'W/"1"'})
        bc = bare.test_client()
        bare_per = cpu_per_call(lambda k: [bc.get("/fhir/Patient/x") for _ in range(k)], 2000)
        unit = "bundle" if op == "ingest" else "request"
        print(f"{op}: {per:.3f} CPU ms per {unit} in-process (bare Flask endpoint: {bare_per:.3f} ms)")
        if op == "bearer-read":  # the gate's own cost is the rest
            print(f"  of which writing the audit trail: {audit_per:.3f} CPU ms per request (this process)")
        prof = cProfile.Profile(time.process_time)  # CPU time: waits on PostgreSQL do not count
        prof.enable()
        run(n)
        prof.disable()
        if os.environ.get("BENCH_PROFILE_DUMP"):  # for pstats' callers/callees views
            prof.dump_stats(os.environ["BENCH_PROFILE_DUMP"])
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "40")))
        print(out.getvalue().replace(sysconfig.get_paths()["purelib"] + "/", ""))
    finally:
        scratch.drop_all()
    return 0


def _tokens(url: str, c: Any, count: int) -> list[str]:
    """`count` access tokens of one Backend Services client (RFC 7523 client assertions)."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from fhirserver.storage import make_engine
    from smart_auth import store

    key = RSAKey.generate_key(2048, parameters={"kid": "bench"}, private=True)
    engine = make_engine(url)
    cid = store.add_client(engine, name="bench backend", auth_method="private_key_jwt",
                           jwks={"keys": [key.as_dict(private=False)]}, scope="system/*.rs")["client_id"]
    engine.dispose()
    out = []
    for _ in range(count):
        t = int(time.time())
        assertion = jwt.encode({"alg": "RS384", "kid": "bench", "typ": "JWT"},
                               {"iss": cid, "sub": cid, "aud": "http://localhost/auth/token", "exp": t + 240,
                                "iat": t, "jti": uuid.uuid4().hex}, key, algorithms=["RS384"])
        r = c.post("/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        if r.status_code != 200:
            raise RuntimeError(f"the token endpoint answered {r.status_code}: {r.data[:300]!r}")
        out.append(r.json["access_token"])
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
