"""Search benchmark: FHIR searches against hand-written SQL on the same tables.

Loads BENCH_PATIENTS (default 100,000) generated Patients, a fifth of them with a
DiagnosticReport, two result Observations and an Appointment (fixed seed), into a fresh
PostgreSQL database through the repository (so every row is indexed as on a real write), then
measures p50/p95 latency of each search through the app (in-process WSGI client: no network)
and of a hand-written SQL query giving the same answer. Prints a table and a last JSON line.

    .venv/bin/python -m bench.search            # BENCH_PATIENTS=20000 for a quicker run
"""
from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from sqlalchemy import create_engine, text

SEED = 20261121
FAMILIES = ["Garcia", "Smith", "Müller", "Rossi", "Dubois", "Kowalski", "Novak", "Silva", "Jensen", "Ivanova",
            "Nakamura", "Okafor", "Haddad", "Andersson", "Murphy", "Costa", "Yilmaz", "Chen", "Kumar", "Lopez"]
GIVEN = ["Ana", "Luis", "Maria", "John", "Eva", "Omar", "Lena", "Pedro", "Sara", "Ivan", "Mia", "Noah"]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# nine patients in ten belong to the first clinic, the rest to the second (staff policies)
ORGS = ("org-main", "org-small")


def log(msg: str) -> None:
    print(f"[bench.search] {msg}", file=sys.stderr, flush=True)


def generate(n: int) -> Any:
    """Deterministic resources: (type, id, body) in dependency order."""
    rnd = random.Random(SEED)
    for org in ORGS:
        yield "Organization", org, {"resourceType": "Organization", "id": org, "name": f"Clinic {org}"}
    for i in range(n):
        pid = f"p{i}"
        family = f"{rnd.choice(FAMILIES)}{i % 997}"
        yield "Patient", pid, {
            "resourceType": "Patient", "id": pid, "gender": rnd.choice(["female", "male"]),
            "managingOrganization": {"reference": f"Organization/{ORGS[0] if i % 10 else ORGS[1]}"},
            "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            "name": [{"family": family, "given": [rnd.choice(GIVEN)]}],
            "identifier": [{"system": "urn:mrn", "value": f"MRN{i:07d}"}],
            "telecom": [{"system": "email", "value": f"patient{i}@example.org"},
                        {"system": "phone", "value": f"+34600{i:06d}"}],
        }
        if i % 5 == 0:
            obs = []
            for k in range(2):
                oid = f"o{i}-{k}"
                obs.append(oid)
                yield "Observation", oid, {
                    "resourceType": "Observation", "id": oid, "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": rnd.choice(["2339-0", "718-7"])}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": round(rnd.uniform(3, 12), 1), "system": "http://unitsofmeasure.org",
                                      "code": "mmol/L"}}
            yield "DiagnosticReport", f"d{i}", {
                "resourceType": "DiagnosticReport", "id": f"d{i}", "status": "final",
                "code": {"text": "Panel"}, "subject": {"reference": f"Patient/{pid}"},
                "result": [{"reference": f"Observation/{o}"} for o in obs]}
            yield "Appointment", f"a{i}", {
                "resourceType": "Appointment", "id": f"a{i}", "status": "booked",
                "start": f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T09:00:00Z",
                "end": f"2026-01-01T09:30:00Z",
                "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"}]}


def load(services: Any, n: int) -> tuple[int, float, float]:
    """Load through the repository in transactions of 1,000; returns (count, seconds, indexer ms/resource)."""
    repo = services.repo
    spent = [0.0]
    inner = repo.indexer

    def timed(res_type: str, body: dict) -> Any:
        t = time.perf_counter()
        out = inner(res_type, body)
        spent[0] += time.perf_counter() - t
        return out

    repo.indexer = timed
    count, t0 = 0, time.perf_counter()
    batch: list[tuple[str, str, dict]] = []
    for item in generate(n):
        batch.append(item)
        if len(batch) >= 1000:
            _write(repo, batch)
            count += len(batch)
            batch = []
            if count % 50000 == 0:
                log(f"{count} resources loaded ({count / (time.perf_counter() - t0):.0f}/s)")
    if batch:
        _write(repo, batch)
        count += len(batch)
    repo.indexer = inner
    return count, time.perf_counter() - t0, spent[0] * 1000 / max(count, 1)


def _write(repo: Any, batch: list[tuple[str, str, dict]]) -> None:
    with repo.transaction(write=True) as tx:
        for res_type, rid, body in batch:
            tx.create(res_type, body, rid)


def index_cost(services: Any, n: int = 3000) -> float:
    """Extra ms per resource of writing with index rows vs without (same resources, same DB)."""
    repo = services.repo
    items = [(t, f"x{i}-{rid}", {**b, "id": f"x{i}-{rid}"}) for i, (t, rid, b) in enumerate(generate(n // 3))][:n]
    inner = repo.indexer
    timings = {}
    for label, indexer in (("without", None), ("with", inner)):
        repo.indexer = indexer
        prefix = "n" if indexer is None else "y"
        batch = [(t, prefix + rid, {**b, "id": prefix + rid}) for t, rid, b in items]
        t0 = time.perf_counter()
        for i in range(0, len(batch), 500):
            _write(repo, batch[i:i + 500])
        timings[label] = (time.perf_counter() - t0) * 1000 / len(batch)
    repo.indexer = inner
    return timings["with"] - timings["without"]


def measure(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    fn()  # warm
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], result


def main() -> int:
    n = int(os.environ.get("BENCH_PATIENTS", "100000"))
    runs = int(os.environ.get("BENCH_RUNS", "30"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL", DEFAULT_PG)
    dbname = f"fhirbench_search_{os.getpid()}"
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{dbname}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + dbname
    try:
        return _run(url, n, runs)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


def _run(url: str, n: int, runs: int) -> int:
    from fhirserver.app import create_app
    from fhirserver.config import Settings

    app = create_app(Settings(database_url=url, base_url="http://bench", data_dir=Path(tempfile.mkdtemp()),
                              log_requests=False, insecure_no_auth=True), upgrade_schema=True)
    services = app.extensions["fhirserver"]
    log(f"loading {n} patients and related resources ...")
    count, secs, idx_ms = load(services, n)
    log(f"loaded {count} resources in {secs:.0f} s ({count / secs:.0f}/s); indexer {idx_ms:.2f} ms/resource")
    with services.repo.engine.begin() as c:
        c.execute(text("ANALYZE"))
    extra_ms = index_cost(services)
    client = app.test_client()
    engine = services.repo.engine
    mid = n // 2 - (n // 2) % 5

    def fhir(query: str) -> Callable[[], Any]:
        def run() -> Any:
            r = client.get("/fhir/" + query)
            assert r.status_code == 200, r.data[:300]
            return sorted(e["resource"]["id"] for e in json.loads(r.data).get("entry", [])
                          if e.get("search", {}).get("mode") in ("match", "include"))
        return run

    def sql(query: str, **params: Any) -> Callable[[], Any]:
        def run() -> Any:
            with engine.connect() as c:
                return sorted(r[0] for r in c.execute(text(query), params))
        return run

    # page 50 of a ~1,000-page result: walk the cursor links once, then time the 50th page
    page_query = "Patient?_count=%d&_total=none" % max(1, n // 1000)
    url_ = "/fhir/" + page_query
    for _ in range(49):
        nxt = [l["url"] for l in json.loads(client.get(url_).data)["link"] if l["relation"] == "next"]
        if not nxt:
            break
        parts = urlsplit(nxt[0])
        url_ = parts.path + "?" + parts.query
    page50 = url_
    page_size = max(1, n // 1000)
    after = int(page50.split("_page_after=")[1].split("&")[0]) if "_page_after=" in page50 else 0

    cases = [
        ("name prefix", fhir("Patient?name=garcia12&_total=none&_count=100"),
         sql("SELECT r.res_id FROM resource r WHERE r.res_type='Patient' AND NOT r.deleted AND EXISTS (SELECT 1 FROM idx_string s "
             "WHERE s.res_pk=r.pk AND s.res_type='Patient' AND s.param='name' AND s.value LIKE 'garcia12%') ORDER BY r.pk LIMIT 100")),
        ("identifier token", fhir(f"Patient?identifier=urn:mrn|MRN{mid:07d}&_total=none"),
         sql("SELECT r.res_id FROM resource r JOIN idx_token t ON t.res_pk=r.pk WHERE t.res_type='Patient' AND t.param='identifier' "
             "AND t.system='urn:mrn' AND t.code=:c AND NOT r.deleted", c=f"MRN{mid:07d}")),
        ("birthdate range", fhir("Patient?birthdate=ge1980-03-01&birthdate=lt1980-03-08&_total=none&_count=100"),
         sql("SELECT r.res_id FROM resource r WHERE r.res_type='Patient' AND NOT r.deleted AND EXISTS (SELECT 1 FROM idx_date d "
             "WHERE d.res_pk=r.pk AND d.res_type='Patient' AND d.param='birthdate' AND d.high > '1980-03-01' ) AND EXISTS (SELECT 1 FROM "
             "idx_date d WHERE d.res_pk=r.pk AND d.res_type='Patient' AND d.param='birthdate' AND d.low < '1980-03-08') ORDER BY r.pk LIMIT 100")),
        ("email", fhir(f"Patient?email=patient{mid}@example.org&_total=none"),
         sql("SELECT r.res_id FROM resource r JOIN idx_token t ON t.res_pk=r.pk WHERE t.res_type='Patient' AND t.param='email' "
             "AND t.code=:c AND NOT r.deleted", c=f"patient{mid}@example.org")),
        ("DR subject + _include", fhir(f"DiagnosticReport?subject=Patient/p{mid}&_include=DiagnosticReport:result&_total=none"),
         sql("SELECT r.res_id FROM resource r JOIN idx_reference f ON f.res_pk=r.pk WHERE f.res_type='DiagnosticReport' AND "
             "f.param='subject' AND f.target_type='Patient' AND f.target_id=:p AND NOT r.deleted UNION ALL SELECT o.res_id FROM resource r "
             "JOIN idx_reference f ON f.res_pk=r.pk JOIN idx_reference i ON i.res_pk=r.pk AND i.param='result' JOIN resource o ON "
             "o.res_type=i.target_type AND o.res_id=i.target_id WHERE f.res_type='DiagnosticReport' AND f.param='subject' AND "
             "f.target_id=:p AND NOT o.deleted", p=f"p{mid}")),
        ("chain subject.name", fhir("DiagnosticReport?subject:Patient.name=garcia12&_total=none&_count=100"),
         sql("SELECT r.res_id FROM resource r JOIN idx_reference f ON f.res_pk=r.pk AND f.param='subject' JOIN resource p ON "
             "p.res_type='Patient' AND p.res_id=f.target_id JOIN idx_string s ON s.res_pk=p.pk AND s.param='name' WHERE "
             "r.res_type='DiagnosticReport' AND s.value LIKE 'garcia12%' GROUP BY r.pk, r.res_id ORDER BY r.pk LIMIT 100")),
        ("_has Appointment date", fhir("Patient?_has:Appointment:patient:date=2026-05-10&_total=none&_count=100"),
         sql("SELECT r.res_id FROM resource r WHERE r.res_type='Patient' AND EXISTS (SELECT 1 FROM resource a JOIN idx_reference f "
             "ON f.res_pk=a.pk AND f.param='patient' JOIN idx_date d ON d.res_pk=a.pk AND d.param='date' WHERE a.res_type='Appointment'"
             " AND f.target_id=r.res_id AND d.low >= '2026-05-10' AND d.high <= '2026-05-11') ORDER BY r.pk LIMIT 100")),
        ("page 50 of 1,000", fhir(page50[len("/fhir/"):]),
         sql("SELECT res_id FROM resource WHERE res_type='Patient' AND NOT deleted AND pk > :a ORDER BY pk LIMIT :n",
             a=after, n=page_size)),
    ]
    results = {}
    print(f"{'search':28} {'fhir p50':>9} {'fhir p95':>9} {'sql p50':>9} {'sql p95':>9} {'p95 ratio':>9}  rows")
    ok = True
    for name, f, s in cases:
        fp50, fp95, fres = measure(f, runs)
        sp50, sp95, sres = measure(s, runs)
        same = sorted(set(fres)) == sorted(set(sres))
        ok = ok and same
        ratio = fp95 / sp95 if sp95 else float("inf")
        results[name] = {"fhir_p50_ms": round(fp50, 2), "fhir_p95_ms": round(fp95, 2), "sql_p50_ms": round(sp50, 2),
                         "sql_p95_ms": round(sp95, 2), "p95_ratio": round(ratio, 2), "same_answer": same,
                         "rows": len(set(fres))}
        print(f"{name:28} {fp50:9.2f} {fp95:9.2f} {sp50:9.2f} {sp95:9.2f} {ratio:9.2f}  {len(set(fres))}"
              + ("" if same else "  DIFFERENT ANSWER"))
    summary = {"patients": n, "resources": count, "load_resources_per_s": round(count / secs),
               "indexer_ms_per_resource": round(idx_ms, 3), "index_write_extra_ms_per_resource": round(extra_ms, 3),
               "searches": results, "all_same_answers": ok}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
