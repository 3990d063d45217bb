"""`make bench`: the server on PostgreSQL against the limits of its database and its framework.

One run measures, with 8 concurrent keep-alive HTTP clients (one cheap selector loop, see
`bench.loadgen`), create / read / update throughput and p50/p99 latency of `fhirserver serve`,
and in the same run the references:

- raw psycopg on a second fresh database with the server's own schema: the same rows in the same
  transactions (create: INSERT resource + INSERT resource_history; read: SELECT by
  (res_type, res_id); update: SELECT ... FOR UPDATE + UPDATE + INSERT history), 8 connections;
- a bare Flask endpoint (`bench.bare_app`) returning the bytes of the server's read through the
  same gunicorn configuration, hit by the same load generator;
- transaction ingest of the 25 Synthea patients in `bench/data/synthea` (resources/s).

It prints one table and, as its last line, one JSON object with the ratios and figures.
Environment: BENCH_SECONDS (measured seconds per phase, default 8), BENCH_WARMUP (default 1),
FHIRSERVER_BENCH_DATABASE_URL (PostgreSQL server to create the scratch databases on, default
postgresql://postgres@127.0.0.1:5432/postgres), BENCH_KEEP_LOGS=1 (keep the server logs).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench import loadgen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYNTHEA_DIR = HERE / "data" / "synthea"
CLIENTS = 8
WORKERS = 2
THREADS = 4
INGEST_CLIENTS = 3
TARGETS = {"read_ratio": 0.6, "create_ratio": 0.3, "update_ratio": 0.3, "synthea_resources_per_s": 1000.0}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- test data ---------------------------------------------------------------------------------
_GIVEN = ["Amelia", "Jonas", "Priya", "Mateo", "Chloe", "Kwame", "Sofia", "Liam", "Hana", "Omar",
          "Ingrid", "Diego", "Yuki", "Noah", "Fatima", "Erik"]
_FAMILY = ["Schroeder", "Okafor", "Nguyen", "Garcia", "Lindqvist", "Haddad", "Kowalski", "Moreau"]
_CITY = [("Boston", "MA", "02118"), ("Springfield", "IL", "62701"), ("Austin", "TX", "78701"),
         ("Portland", "OR", "97205")]


def patient(i: int) -> dict[str, Any]:
    """A realistic ~1 KB Patient (US Core-like identifiers, name, telecom, address, language)."""
    given, family = _GIVEN[i % len(_GIVEN)], _FAMILY[(i // len(_GIVEN)) % len(_FAMILY)]
    city, state, postal = _CITY[i % len(_CITY)]
    return {
        "resourceType": "Patient",
        "identifier": [
            {"use": "usual",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                  "code": "MR", "display": "Medical Record Number"}]},
             "system": "http://hospital.example.org/mrn", "value": f"MRN-{100000 + i}"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": f"999-{10 + i % 89:02d}-{1000 + i % 8999:04d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given, "Marie" if i % 2 else "Lee"],
                  "prefix": ["Ms." if i % 2 else "Mr."]}],
        "telecom": [{"system": "phone", "value": f"555-{100 + i % 900:03d}-{1000 + i % 9000:04d}", "use": "home"},
                    {"system": "email", "value": f"{given.lower()}.{family.lower()}{i}@example.org"}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [{"use": "home", "line": [f"{10 + i % 990} Main Street", "Apt 4B"], "city": city,
                     "state": state, "postalCode": postal, "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "M", "display": "Married"}]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US",
                                                    "display": "English (United States)"}]},
                           "preferred": True}],
        "generalPractitioner": [{"reference": "Practitioner/example", "display": "Dr. Adam Careful"}],
    }


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- PostgreSQL scratch databases ----------------------------------------------------------------
def _with_db(url: str, name: str) -> str:
    head, sep, tail = url.partition("://")
    rest = tail.split("?", 1)
    authority = rest[0].split("/", 1)[0]
    return f"{head}{sep}{authority}/{name}" + (f"?{rest[1]}" if len(rest) > 1 else "")


class Scratch:
    """Fresh databases on the PostgreSQL server, dropped (WITH FORCE) on exit."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url if "/" in admin_url.split("://", 1)[1] else admin_url + "/postgres"
        self.created: list[str] = []

    def create(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return _with_db(self.admin_url, name)

    def drop_all(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the first error
            log(f"could not drop {self.created}: {exc}")
        self.created = []


# -- processes -----------------------------------------------------------------------------------
class Proc:
    """A child process (its own session) with its output in a log file; stopped on exit."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_http(self, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.p.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)  # the gunicorn master and its workers
                self.p.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=5)
        self._log.close()

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.p.pid)], capture_output=True,
                                 text=True, check=False).stdout
            return [int(x) for x in out.split()]
        except OSError:
            return []


_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | str) -> float:
    """utime+stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / _TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> float:
    """CPU-seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / _TCK
    except (OSError, ValueError):
        return 0.0


class CpuMeter:
    """CPU used during a phase by the app processes, the PostgreSQL backends of a database, this
    process (the client) and everything else on the machine (other = machine - the three)."""

    def __init__(self, app_pids: list[int], db_pids: Callable[[], list[int]]) -> None:
        self.app_pids, self.db_pids = app_pids, db_pids

    def __enter__(self) -> "CpuMeter":
        self._db0 = {p: proc_cpu(p) for p in self.db_pids()}
        self._app0 = sum(proc_cpu(p) for p in self.app_pids)
        self._me0 = proc_cpu("self")
        self._m0 = machine_busy()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.machine = machine_busy() - self._m0
        self.client = proc_cpu("self") - self._me0
        self.app = sum(proc_cpu(p) for p in self.app_pids) - self._app0
        pids = set(self._db0) | set(self.db_pids())
        self.db = sum(proc_cpu(p) - self._db0.get(p, 0.0) for p in pids)
        self.other = max(0.0, self.machine - self.app - self.db - self.client)

    def per_request(self, n: int) -> dict[str, float]:
        n = max(1, n)
        return {k: round(1000 * getattr(self, k) / n, 3) for k in ("app", "db", "client", "other")}

    def busy_share(self) -> float:
        return round(self.machine / (self.wall * loadgen.cpu_count()), 3) if self.wall else 0.0


def backend_pids(admin_url: str, dbname: str) -> Callable[[], list[int]]:
    """PostgreSQL backend pids connected to `dbname` (readable in /proc only on a local server)."""
    def get() -> list[int]:
        import psycopg

        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                return [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))]
        except Exception:  # noqa: BLE001 - accounting only
            return []
    return get


# -- HTTP phases ---------------------------------------------------------------------------------
_LOC_RE = re.compile(rb"\r\nlocation: [^\r]*/Patient/([A-Za-z0-9\-.]+)/_history/", re.I)


def http_phase(port: int, source: loadgen.RequestSource, seconds: float, warmup: float,
               capture: bool = False, pids: list[int] | None = None) -> tuple[loadgen.Result, float]:
    c0 = cpu_seconds(pids or [])
    res = loadgen.run("127.0.0.1", port, source, connections=CLIENTS, duration=seconds, warmup=warmup,
                      capture=capture)
    return res, cpu_seconds(pids or []) - c0


# -- raw psycopg reference -----------------------------------------------------------------------
SQL_INSERT = ("INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, body) "
              "VALUES (%s, %s, %s, %s, false, CAST(%s AS JSONB)) RETURNING resource.pk")
SQL_HISTORY = ("INSERT INTO resource_history (res_type, res_id, version_id, last_updated, method, deleted, body) "
               "VALUES (%s, %s, %s, %s, %s, false, CAST(%s AS JSONB))")
SQL_SELECT = ("SELECT resource.pk, resource.res_type, resource.res_id, resource.version_id, "
              "resource.last_updated, resource.deleted, CAST(resource.body AS TEXT) AS body "
              "FROM resource WHERE resource.res_type = %s AND resource.res_id = %s")
SQL_UPDATE = ("UPDATE resource SET version_id=%s, last_updated=%s, deleted=false, body=CAST(%s AS JSONB) "
              "WHERE resource.pk = %s")


def stamped_text(body: dict[str, Any], res_id: str, vid: int, when: datetime) -> str:
    """The JSON text the server stores: id and meta first, then the client's elements."""
    out = {"resourceType": body["resourceType"], "id": res_id,
           "meta": {"versionId": str(vid), "lastUpdated": when.isoformat(timespec="milliseconds")}}
    out.update({k: v for k, v in body.items() if k not in out})
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> datetime:
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def raw_phase(url: str, op: Callable[[Any, random.Random, int], None], seconds: float,
              warmup: float) -> loadgen.Result:
    """8 threads, one psycopg connection each (autocommit off), each looping `op` for the window."""
    import psycopg

    conns = [psycopg.connect(url, autocommit=False) for _ in range(CLIENTS)]
    lats: list[list[int]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    barrier = threading.Barrier(CLIENTS + 1)
    t_bounds: dict[str, int] = {}

    def work(k: int) -> None:
        conn, rnd, out = conns[k], random.Random(k), lats[k]
        perf = time.perf_counter_ns
        barrier.wait()
        t_measure, t_end = t_bounds["measure"], t_bounds["end"]
        n = 0
        while True:
            t0 = perf()
            if t0 >= t_end:
                break
            try:
                op(conn, rnd, k * 1_000_000 + n)
            except Exception:  # noqa: BLE001 - counted, the phase goes on
                conn.rollback()
                errors[k] += 1
            n += 1
            t1 = perf()
            if t0 >= t_measure and t1 <= t_end:
                out.append(t1 - t0)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter_ns()
    t_bounds["measure"] = t0 + int(warmup * 1e9)
    t_bounds["end"] = t_bounds["measure"] + int(seconds * 1e9)
    barrier.wait()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    all_lat = [x for xs in lats for x in xs]
    return loadgen.Result(seconds, all_lat, {200: len(all_lat)}, sum(errors), time.process_time() - cpu0, [])


class RawOps:
    """The server's statements for create / read / update, issued straight through psycopg."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.ids: list[str] = []
        self._lock = threading.Lock()

    def create(self, conn: Any, _rnd: random.Random, _n: int) -> None:
        rid = str(uuid.uuid4())
        when = now_ms()
        text = stamped_text(self.template, rid, 1, when)
        with conn.cursor() as cur:
            cur.execute(SQL_INSERT, ("Patient", rid, 1, when, text))
            cur.fetchone()
            cur.execute(SQL_HISTORY, ("Patient", rid, 1, when, "POST", text))
        conn.commit()
        self.ids.append(rid)  # list.append is atomic under the GIL

    def read(self, conn: Any, rnd: random.Random, _n: int) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT, ("Patient", rid))
            row = cur.fetchone()
        conn.commit()
        if row is None:
            raise LookupError(rid)

    def update(self, conn: Any, rnd: random.Random, _n: int) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT + " FOR UPDATE", ("Patient", rid))
            pk, _t, _i, vid, last, _d, _body = cur.fetchone()
            vid += 1
            when = max(now_ms(), last)
            text = stamped_text({**self.template, "id": rid}, rid, vid, when)
            cur.execute(SQL_UPDATE, (vid, when, text, pk))
            cur.execute(SQL_HISTORY, ("Patient", rid, vid, when, "PUT", text))
        conn.commit()


# -- Synthea ingest ------------------------------------------------------------------------------
def synthea_ingest(port: int, files: list[Path]) -> dict[str, Any]:
    """POST every bundle as a transaction with INGEST_CLIENTS concurrent clients."""
    import http.client

    bundles = []
    for f in files:
        data = f.read_bytes()
        bundles.append((f.name, data, len(json.loads(data)["entry"])))
    bundles.sort(key=lambda b: -len(b[1]))  # largest first: the clients finish together
    queue = list(bundles)
    lock = threading.Lock()
    done = {"resources": 0, "bundles": 0, "failed": []}
    lat: list[float] = []

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not queue:
                    break
                name, data, n = queue.pop(0)
            t0 = time.perf_counter()
            conn.request("POST", "/fhir", body=data, headers={
                "Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
                "Prefer": "return=minimal"})
            resp = conn.getresponse()
            body = resp.read()
            took = time.perf_counter() - t0
            ok = resp.status == 200
            if ok:
                entries = json.loads(body).get("entry", [])
                ok = len(entries) == n and all(str(e.get("response", {}).get("status", "")).startswith("201")
                                               for e in entries)
            with lock:
                lat.append(took)
                if ok:
                    done["resources"] += n
                    done["bundles"] += 1
                else:
                    done["failed"].append(f"{name}: HTTP {resp.status} {body[:300]!r}")
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, daemon=True) for _ in range(INGEST_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"resources": done["resources"], "bundles": done["bundles"], "seconds": wall,
            "resources_per_s": done["resources"] / wall if wall else 0.0, "failed": done["failed"],
            "bundle_p50_ms": lat[len(lat) // 2] * 1000 if lat else float("nan"),
            "bundle_max_ms": lat[-1] * 1000 if lat else float("nan")}


# -- output --------------------------------------------------------------------------------------
def fig(res: loadgen.Result) -> dict[str, float]:
    return {"rps": round(res.rps, 1), "p50_ms": round(res.pct_ms(50), 2), "p99_ms": round(res.pct_ms(99), 2),
            "n": res.count, "errors": res.errors}


def table(rows: list[tuple[str, str, loadgen.Result, loadgen.Result]]) -> str:
    head = (f"{'phase':<8} {'reference':<16} {'server req/s':>12} {'ref req/s':>10} {'ratio':>6} "
            f"{'srv p50':>8} {'srv p99':>8} {'ref p50':>8} {'ref p99':>8}  (ms)")
    lines = [head, "-" * len(head)]
    for phase, ref_name, srv, ref in rows:
        ratio = srv.rps / ref.rps if ref.rps else float("nan")
        lines.append(f"{phase:<8} {ref_name:<16} {srv.rps:>12.0f} {ref.rps:>10.0f} {ratio:>6.2f} "
                     f"{srv.pct_ms(50):>8.2f} {srv.pct_ms(99):>8.2f} {ref.pct_ms(50):>8.2f} {ref.pct_ms(99):>8.2f}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL") or DEFAULT_PG
    files = sorted(SYNTHEA_DIR.glob("*.json"))
    if not files:
        log(f"no Synthea bundles under {SYNTHEA_DIR}")
        return 2

    def _term(_sig: int, _frm: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _term)
    tmp = Path(tempfile.mkdtemp(prefix="fhirbench-"))
    keep_logs = os.environ.get("BENCH_KEEP_LOGS") == "1"
    scratch = Scratch(admin_url)
    failed = True
    with ExitStack() as stack:
        stack.callback(lambda: shutil.rmtree(tmp, ignore_errors=True) if not (keep_logs or failed) else
                       log(f"logs kept in {tmp}"))
        stack.callback(scratch.drop_all)
        pid = os.getpid()
        try:
            srv_url = scratch.create(f"fhirbench_{pid}")
            raw_url = scratch.create(f"fhirbench_{pid}_raw")
        except Exception as exc:  # noqa: BLE001
            log(f"cannot create scratch databases on {admin_url}: {exc}")
            return 2
        from fhirserver.storage import make_engine, upgrade

        engine = make_engine(raw_url)
        upgrade(engine)  # the server's own DDL for the raw reference
        engine.dispose()

        env = {**os.environ, "FHIRSERVER_DATABASE_URL": srv_url, "PYTHONUNBUFFERED": "1"}
        port = loadgen.free_port()
        server = Proc("server", [sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
                                 "--threads", str(THREADS), "--database-url", srv_url,
                                 "--data-dir", str(tmp / "data")], env, tmp)
        stack.callback(server.stop)
        server.wait_http(f"http://127.0.0.1:{port}/fhir/metadata")
        spids = server.worker_pids()
        host = f"127.0.0.1:{port}"
        log(f"server up on :{port} (workers {spids}); {seconds:g}s per phase after {warmup:g}s warm-up")

        # create
        variants = [patient(i) for i in range(64)]
        create_reqs = [loadgen.build_request("POST", "/fhir/Patient", host, dumps(p)) for p in variants]
        log(f"Patient body {len(dumps(variants[0]))} bytes")
        s_create, s_create_cpu = http_phase(port, loadgen.cycle(create_reqs), seconds, warmup, capture=True,
                                            pids=spids)
        ids = [m.group(1).decode() for h in s_create.captured if (m := _LOC_RE.search(h))]
        if not ids:
            raise RuntimeError(f"no ids from the create phase: {s_create.statuses} {s_create.captured[:1]!r}")
        log(f"server create {s_create.rps:.0f}/s ({len(ids)} ids)")

        raw = RawOps(variants[0])
        r_create = raw_phase(raw_url, raw.create, seconds, warmup)
        log(f"raw insert {r_create.rps:.0f}/s")

        # read: capture one server answer for the bare app
        one = loadgen.run("127.0.0.1", port, loadgen.cycle([loadgen.build_request("GET", f"/fhir/Patient/{ids[0]}", host)]),
                          connections=1, max_requests=1, capture=True).captured[0]
        head, _, body = one.partition(b"\r\n\r\n")
        hdrs = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        hdrs = {k.lower(): v for k, v in hdrs.items()}
        (tmp / "read_body.json").write_bytes(body)
        bare_port = loadgen.free_port()
        bare = Proc("bare", [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port),
                             "--workers", str(WORKERS), "--threads", str(THREADS),
                             "--body-file", str(tmp / "read_body.json"),
                             "--content-type", hdrs["content-type"],
                             "--header", f"ETag: {hdrs['etag']}",
                             "--header", f"Last-Modified: {hdrs['last-modified']}"], env, tmp)
        stack.callback(bare.stop)
        bare.wait_http(f"http://127.0.0.1:{bare_port}/fhir/metadata")

        read_reqs = [loadgen.build_request("GET", f"/fhir/Patient/{i}", host) for i in ids]
        s_read, s_read_cpu = http_phase(port, loadgen.random_pick(read_reqs.__getitem__, len(read_reqs)),
                                        seconds, warmup, pids=spids)
        log(f"server read {s_read.rps:.0f}/s")
        bare_host = f"127.0.0.1:{bare_port}"
        bare_reqs = [loadgen.build_request("GET", f"/fhir/Patient/{i}", bare_host) for i in ids]
        b_read, b_read_cpu = http_phase(bare_port, loadgen.random_pick(bare_reqs.__getitem__, len(bare_reqs)),
                                        seconds, warmup, pids=bare.worker_pids())
        log(f"bare Flask read {b_read.rps:.0f}/s")
        r_read = raw_phase(raw_url, raw.read, seconds, warmup)
        log(f"raw select {r_read.rps:.0f}/s")

        # update
        upd_reqs = [loadgen.build_request("PUT", f"/fhir/Patient/{rid}", host,
                                          dumps({**variants[k % 64], "id": rid}))
                    for k, rid in enumerate(ids)]
        s_update, s_update_cpu = http_phase(port, loadgen.random_pick(upd_reqs.__getitem__, len(upd_reqs), seed=7),
                                            seconds, warmup, pids=spids)
        log(f"server update {s_update.rps:.0f}/s")
        r_update = raw_phase(raw_url, raw.update, seconds, warmup)
        log(f"raw update {r_update.rps:.0f}/s")

        # Synthea ingest
        bare.stop()
        c0 = cpu_seconds(spids)
        ingest = synthea_ingest(port, files)
        ingest_cpu = cpu_seconds(spids) - c0
        log(f"Synthea ingest {ingest['resources']} resources in {ingest['seconds']:.1f}s")

        rows = [("create", "raw INSERT", s_create, r_create),
                ("read", "bare Flask", s_read, b_read),
                ("update", "raw UPDATE", s_update, r_update),
                ("read", "raw SELECT", s_read, r_read)]
        print(table(rows))
        print(f"Synthea transaction ingest: {ingest['resources']} resources / {ingest['bundles']} bundles "
              f"in {ingest['seconds']:.1f}s = {ingest['resources_per_s']:.0f} resources/s "
              f"({INGEST_CLIENTS} clients; bundle p50 {ingest['bundle_p50_ms']:.0f} ms, "
              f"max {ingest['bundle_max_ms']:.0f} ms)")
        for f in ingest["failed"]:
            print(f"  FAILED {f}")
        ratios = {
            "read_ratio": round(s_read.rps / b_read.rps, 3) if b_read.rps else None,
            "create_ratio": round(s_create.rps / r_create.rps, 3) if r_create.rps else None,
            "update_ratio": round(s_update.rps / r_update.rps, 3) if r_update.rps else None,
            "read_vs_raw_select_ratio": round(s_read.rps / r_read.rps, 3) if r_read.rps else None,
            "synthea_resources_per_s": round(ingest["resources_per_s"], 1),
        }
        met = {k: (ratios[k] is not None and ratios[k] >= v) for k, v in TARGETS.items()}
        errors = sum(r.errors for r in (s_create, s_read, s_update, b_read, r_create, r_read, r_update))
        result = {
            **ratios,
            "targets": TARGETS,
            "targets_met": met,
            "all_targets_met": all(met.values()),
            "server": {"create": fig(s_create), "read": fig(s_read), "update": fig(s_update)},
            "reference": {"raw_insert": fig(r_create), "bare_flask_read": fig(b_read),
                          "raw_select": fig(r_read), "raw_update": fig(r_update)},
            "synthea": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in ingest.items()
                        if k != "failed"} | {"failed": len(ingest["failed"])},
            "server_cpu_s_per_1k_req": {
                "create": round(1000 * s_create_cpu / max(1, s_create.count), 3),
                "read": round(1000 * s_read_cpu / max(1, s_read.count), 3),
                "update": round(1000 * s_update_cpu / max(1, s_update.count), 3),
                "bare_read": round(1000 * b_read_cpu / max(1, b_read.count), 3),
                "synthea_per_1k_resources": round(1000 * ingest_cpu / max(1, ingest["resources"]), 3),
            },
            "client_cpu_share": {"server_read": round(s_read.client_cpu_s / (seconds + warmup), 3),
                                 "bare_read": round(b_read.client_cpu_s / (seconds + warmup), 3)},
            "errors": errors,
            "config": {"clients": CLIENTS, "workers": WORKERS, "threads": THREADS, "seconds": seconds,
                       "warmup": warmup, "cpus": loadgen.cpu_count(), "ingest_clients": INGEST_CLIENTS},
        }
        failed = bool(errors or ingest["failed"])
        print(json.dumps(result, separators=(",", ":")), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
