"""Search benchmark: FHIR searches over HTTP against hand-written SQL served the same way.

Loads BENCH_PATIENTS (default 100,000) generated Patients in two organizations, a fifth of them
with a DiagnosticReport, two result Observations and an Appointment (fixed seed), through the
repository (so every row is indexed as on a real write), runs ANALYZE, then starts
`fhirserver serve --insecure-no-auth` (its defaults: accurate totals) and `bench.search_ref`
(the references: one hand-written statement per search returning the same Bundle, see there),
both under the same gunicorn configuration, and times each search on one keep-alive connection,
server and reference taking turns in BENCH_ROUNDS rounds. Every answer is compared (same
entries, same total); any error or different answer fails the run.

Prints the PostgreSQL settings, a table (p50/p95 per side, p95 ratio) and a last JSON line with
`targets_met` (every p95 ratio <= 2). Exit status: 0 all targets met, 2 a target missed,
1 an error or a different answer.

    .venv/bin/python -m bench.search             # BENCH_PATIENTS=20000 for a quicker run
    BENCH_SEARCH_DATABASE_URL=postgresql://.../mydb .venv/bin/python -m bench.search
        # load once into mydb (kept), reuse it on later runs
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import create_engine, text

from bench.harness import pg_settings

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
                "end": "2026-01-01T09:30:00Z",
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


TARGET = 2.0  # server p95 at most twice the reference's
def patients_in(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as c:
            has = c.execute(text("SELECT to_regclass('resource') IS NOT NULL")).scalar_one()
            return c.execute(text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")).scalar_one() if has else 0
    finally:
        engine.dispose()


def prepare(url: str, n: int, fresh: bool) -> dict[str, Any]:
    """Load the data unless the database holds it already; ANALYZE either way."""
    from fhirserver.app import create_app
    from fhirserver.config import Settings

    app = create_app(Settings(database_url=url, base_url="http://bench/fhir", data_dir=Path(tempfile.mkdtemp()),
                              log_requests=False, insecure_no_auth=True), upgrade_schema=True)
    services = app.extensions["fhirserver"]
    out: dict[str, Any] = {}
    if fresh or patients_in(url) < n:
        log(f"loading {n} patients and related resources ...")
        count, secs, idx_ms = load(services, n)
        log(f"loaded {count} resources in {secs:.0f} s ({count / secs:.0f}/s); indexer {idx_ms:.2f} ms/resource")
        out.update(resources=count, load_resources_per_s=round(count / secs), indexer_ms_per_resource=round(idx_ms, 3))
        if fresh:  # writes extra resources: only into a scratch database
            out["index_write_extra_ms_per_resource"] = round(index_cost(services), 3)
    else:
        log(f"reusing the {patients_in(url)} patients already in the database")
    t = time.perf_counter()
    services.repo.analyze()
    out["analyze_s"] = round(time.perf_counter() - t, 2)
    services.repo.engine.dispose()
    return out


def sample(url: str) -> dict[str, Any]:
    """Search values taken from the data (so a reused or differently sized database works)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as c:
            npat = c.execute(text("SELECT count(*) FROM resource WHERE res_type='Patient' AND NOT deleted")).scalar_one()
            mid = c.execute(text("SELECT f.target_id FROM resource r JOIN idx_reference f ON f.res_pk = r.pk AND "
                                 "f.param = 'subject' WHERE r.res_type = 'DiagnosticReport' ORDER BY r.pk "
                                 "OFFSET :o LIMIT 1"), {"o": npat // 10}).scalar_one()
            mrn, email = c.execute(text(
                "SELECT max(t.code) FILTER (WHERE t.param = 'identifier'), max(t.code) FILTER (WHERE t.param = 'email') "
                "FROM idx_token t JOIN resource r ON r.pk = t.res_pk WHERE r.res_type = 'Patient' AND r.res_id = :p"),
                {"p": mid}).one()
            code = c.execute(text("SELECT c.code FROM idx_reference f JOIN idx_token c ON c.res_pk = f.res_pk AND "
                                  "c.param = 'code' WHERE f.res_type = 'Observation' AND f.param = 'subject' AND "
                                  "f.target_id = :p LIMIT 1"), {"p": mid}).scalar_one()
            page = max(1, npat // 1000)
            after = c.execute(text("SELECT pk FROM resource WHERE res_type='Patient' AND NOT deleted ORDER BY pk "
                                   "OFFSET :o LIMIT 1"), {"o": page * 49 - 1}).scalar_one()
    finally:
        engine.dispose()
    return {"patients": npat, "mid": mid, "mrn": mrn, "email": email, "code": code, "page": page, "after": after}


def cases(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, server path, reference path): the server with its defaults (accurate totals)."""
    q = urlencode
    return [
        ("name prefix", "/fhir/Patient?" + q({"name": "garcia12", "_count": 100}), "/ref/name?" + q({"v": "garcia12", "n": 100})),
        ("identifier token", "/fhir/Patient?" + q({"identifier": f"urn:mrn|{s['mrn']}"}),
         "/ref/identifier?" + q({"s": "urn:mrn", "v": s["mrn"], "n": 50})),
        ("email", "/fhir/Patient?" + q({"email": s["email"]}), "/ref/email?" + q({"v": s["email"], "n": 50})),
        ("birthdate range (a week)", "/fhir/Patient?birthdate=ge1980-03-01&birthdate=lt1980-03-08&_count=100",
         "/ref/birthdate?" + q({"a": "1980-03-01T00:00:00Z", "b": "1980-03-08T00:00:00Z", "n": 100})),
        ("birthdate=1980 (a year)", "/fhir/Patient?birthdate=1980&_count=100",
         "/ref/birthyear?" + q({"a": "1980-01-01T00:00:00Z", "b": "1981-01-01T00:00:00Z", "n": 100})),
        ("DR subject + _include", "/fhir/DiagnosticReport?" + q({"subject": f"Patient/{s['mid']}",
                                                                 "_include": "DiagnosticReport:result"}),
         "/ref/report_include?" + q({"p": s["mid"], "n": 50})),
        ("Observation subject+code", "/fhir/Observation?" + q({"subject": f"Patient/{s['mid']}",
                                                              "code": f"http://loinc.org|{s['code']}"}),
         "/ref/observations?" + q({"s": "http://loinc.org", "c": s["code"], "p": s["mid"], "n": 50})),
        ("chain subject.name", "/fhir/DiagnosticReport?subject:Patient.name=garcia12&_count=100",
         "/ref/chain?" + q({"v": "garcia12", "n": 100})),
        ("_has Appointment date", "/fhir/Patient?_has:Appointment:patient:date=2026-05-10&_count=100",
         "/ref/has?" + q({"a": "2026-05-10T00:00:00Z", "b": "2026-05-11T00:00:00Z", "n": 100})),
        ("page 50 of 1,000", "/fhir/Patient?" + q({"_count": s["page"], "_page_after": s["after"]}),
         "/ref/page?" + q({"after": s["after"], "n": s["page"]})),
    ]


class Client:
    """One keep-alive HTTP connection; a request's time is until its whole body is read."""

    def __init__(self, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> tuple[float, dict[str, Any]]:
        t = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        data = resp.read()
        ms = (time.perf_counter() - t) * 1000
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {data[:300]!r}")
        return ms, json.loads(data)


def answer(b: dict[str, Any]) -> tuple[Any, list[str]]:
    ids = sorted(f"{e['search']['mode']}:{e['resource']['resourceType']}/{e['resource']['id']}"
                 for e in b.get("entry", []) if e.get("search", {}).get("mode") in ("match", "include"))
    return b.get("total"), ids


def pct(times: list[float], q: float) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, max(0, int(round(q * len(times))) - 1))]


def serve(url: str, tmp: Path) -> tuple[Any, int, Any, int]:
    from bench import loadgen
    from bench.harness import THREADS, WORKERS, Proc

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    port = loadgen.free_port()
    server = Proc("server", [sys.executable, "-m", "fhirserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(WORKERS), "--threads", str(THREADS), "--dicom-port", "0",
                             "--database-url", url, "--base-url", "http://bench/fhir", "--data-dir", str(tmp / "server"),
                             "--insecure-no-auth"], env, tmp)
    ref_port = loadgen.free_port()
    ref = Proc("reference", [sys.executable, "-m", "bench.search_ref", "--port", str(ref_port), "--workers", str(WORKERS),
                             "--threads", str(THREADS), "--database-url", url], env, tmp)
    server.wait_http(f"http://127.0.0.1:{port}/fhir/metadata")
    ref.wait_http(f"http://127.0.0.1:{ref_port}/fhir/metadata")
    return server, port, ref, ref_port


def main() -> int:
    n = int(os.environ.get("BENCH_PATIENTS", "100000"))
    runs = int(os.environ.get("BENCH_RUNS", "40"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "4"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL", DEFAULT_PG)
    keep = os.environ.get("BENCH_SEARCH_DATABASE_URL")
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    dbname = None
    if keep:
        url = keep
    else:
        dbname = f"fhirbench_search_{os.getpid()}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{dbname}"'))
        url = admin_url.rsplit("/", 1)[0] + "/" + dbname
    try:
        return _run(url, n, runs, rounds, fresh=dbname is not None)
    finally:
        if dbname:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin.dispose()


def _run(url: str, n: int, runs: int, rounds: int, fresh: bool) -> int:
    settings = pg_settings(url)
    log("PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    loaded = prepare(url, n, fresh)
    s = sample(url)
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    server, port, ref, ref_port = serve(url, tmp)
    errors: list[str] = []
    results: dict[str, Any] = {}
    try:
        fc, rc = Client(port), Client(ref_port)
        todo = cases(s)
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _f, _r in todo}
        answers: dict[str, Any] = {}
        for name, fpath, rpath in todo:  # warm both, compare the answers once
            try:
                _ms, fb = fc.get(fpath)
                _ms, rb = rc.get(rpath)
            except RuntimeError as exc:
                errors.append(f"{name}: {exc}")
                continue
            answers[name] = (answer(fb), answer(rb))
            if answer(fb) != answer(rb):
                errors.append(f"{name}: different answers: server total {fb.get('total')} / {len(answer(fb)[1])} "
                              f"entries, reference total {rb.get('total')} / {len(answer(rb)[1])} entries")
        per_round = max(1, runs // rounds)
        for _ in range(rounds):  # interleaved: load from elsewhere on the machine hits both alike
            for name, fpath, rpath in todo:
                if name not in answers:
                    continue
                for _i in range(per_round):
                    try:
                        times[name][0].append(fc.get(fpath)[0])
                        times[name][1].append(rc.get(rpath)[0])
                    except RuntimeError as exc:
                        errors.append(f"{name}: {exc}")
                        break
        print(f"{'search':28} {'fhir p50':>9} {'fhir p95':>9} {'ref p50':>9} {'ref p95':>9} {'p95 ratio':>9}  total rows")
        for name, _f, _r in todo:
            ft, rt = times[name]
            if not ft or not rt:
                continue
            ratio = pct(ft, 0.95) / pct(rt, 0.95)
            (total, ids), _ = answers[name]
            results[name] = {"fhir_p50_ms": round(pct(ft, 0.5), 2), "fhir_p95_ms": round(pct(ft, 0.95), 2),
                             "ref_p50_ms": round(pct(rt, 0.5), 2), "ref_p95_ms": round(pct(rt, 0.95), 2),
                             "p95_ratio": round(ratio, 2), "total": total, "entries": len(ids), "runs": len(ft),
                             "met": ratio <= TARGET}
            print(f"{name:28} {pct(ft, .5):9.2f} {pct(ft, .95):9.2f} {pct(rt, .5):9.2f} {pct(rt, .95):9.2f} "
                  f"{ratio:9.2f}  {total} {len(ids)}" + ("" if ratio <= TARGET else "  MISSED (> 2x)"))
    finally:
        server.stop()
        ref.stop()
    missed = [k for k, v in results.items() if not v["met"]]
    for e in errors:
        print(f"ERROR {e}")
    summary = {"patients": s["patients"], "postgres": settings, **loaded, "searches": results,
               "target_p95_ratio": TARGET, "missed": missed, "errors": errors,
               "targets_met": not missed and not errors, "load_average": os.getloadavg()}
    print(json.dumps(summary))
    return 1 if errors else 2 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
