"""`make bench`: the server on PostgreSQL against the limits of its database and its framework.

One run measures, with 8 concurrent keep-alive HTTP clients (one cheap selector loop, see
`bench.loadgen`), create / read / update throughput and p50/p99 latency of `fhirserver serve`,
and in the same run the references:

- raw psycopg on a second fresh database with the server's own schema: the same rows in the same
  transactions (create: INSERT resource + INSERT resource_history + the index rows the server
  writes for that Patient; read: SELECT by (res_type, res_id); update: SELECT ... FOR UPDATE +
  UPDATE + INSERT history + replace the index rows), 8 connections;
- a bare Flask endpoint (`bench.bare_app`) returning the bytes of the server's read through the
  same gunicorn configuration, hit by the same load generator;
- transaction ingest of the 25 Synthea patients in `tests/data/synthea` (resources/s; the
  hospital and practitioner bundles beside them are left out).

It prints one table and, as its last line, one JSON object with the ratios and figures.
Server and reference phases alternate in BENCH_ROUNDS (default 2) turns each, so load from
elsewhere on the machine hits both sides alike.
Environment: BENCH_SECONDS (measured seconds per phase, default 8), BENCH_WARMUP (default 1),
FHIRSERVER_BENCH_DATABASE_URL (PostgreSQL server to create the scratch databases on, default
postgresql://postgres@127.0.0.1:5432/postgres), BENCH_WAIT_IDLE (seconds to wait for a busy
machine to become idle first, default 30), BENCH_RAW_INDEX=0 (the raw reference writes only
resource + resource_history, not the server's index rows), BENCH_KEEP_LOGS=1 (keep the logs).
"""
from __future__ import annotations

import dataclasses
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
SYNTHEA_DIR = ROOT / "tests" / "data" / "synthea"  # shared with the tests (see its PROVENANCE.md)
CLIENTS = 8
WORKERS = 2
THREADS = 4
INGEST_CLIENTS = 3
TARGETS = {"read_ratio": 0.6, "create_ratio": 0.5, "update_ratio": 0.5, "synthea_resources_per_s": 1500.0}
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

        if not self.created:
            return
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

    def wait_workers(self, port: int, n: int, timeout: float = 60.0) -> list[int]:
        """The child pids once `n` of them (the gunicorn workers) hold the listening socket:
        gunicorn answers as soon as its first worker is up, the others may still be forking."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if not os.path.exists("/proc/net/tcp"):
                return pids
            _where, workers = loadgen.owners([], port, pids)
            if len(workers) >= n or time.monotonic() > deadline:
                if len(workers) < n:
                    log(f"{self.name}: only {len(workers)} of {n} workers found; CPU figures will be partial")
                return pids
            time.sleep(0.1)

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


def machine_busy(irq_only: bool = False) -> float:
    """CPU-seconds the whole machine has been busy (all cores), or in (soft)irq, from /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (v[5] + v[6] if irq_only else sum(v[:8]) - v[3] - v[4]) / _TCK
    except (OSError, ValueError):
        return 0.0


class CpuMeter:
    """CPU used during a phase by the app processes, the PostgreSQL backends of a database, this
    process (the client), the kernel's (soft)irq work (loopback TCP) and everything else on the
    machine (other = machine - the four: other processes, PostgreSQL's WAL writer...)."""

    def __init__(self, app_pids: list[int], db_pids: Callable[[], list[int]]) -> None:
        self.app_pids, self.db_pids = app_pids, db_pids

    def __enter__(self) -> "CpuMeter":
        self._db0 = {p: proc_cpu(p) for p in self.db_pids()}
        self._app0 = sum(proc_cpu(p) for p in self.app_pids)
        self._me0 = proc_cpu("self")
        self._m0 = machine_busy()
        self._irq0 = machine_busy(irq_only=True)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.machine = machine_busy() - self._m0
        self.irq = machine_busy(irq_only=True) - self._irq0
        self.client = proc_cpu("self") - self._me0
        self.app = sum(proc_cpu(p) for p in self.app_pids) - self._app0
        pids = set(self._db0) | set(self.db_pids())
        self.db = sum(proc_cpu(p) - self._db0.get(p, 0.0) for p in pids)
        self.other = max(0.0, self.machine - self.app - self.db - self.client - self.irq)

    def per_request(self, n: int) -> dict[str, float]:
        n = max(1, n)
        return {k: round(1000 * getattr(self, k) / n, 3) for k in ("app", "db", "client", "irq", "other")}

    def cpu_bound_rate(self, n: int) -> float:
        """Operations/s if the whole machine were theirs and CPU the only limit: CPUs / (CPU per
        operation without `other`). An upper bound that other processes on the machine don't skew."""
        own = self.app + self.db + self.client + self.irq
        return round(loadgen.cpu_count() * n / own, 1) if own > 0 else 0.0

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


# -- phases ----------------------------------------------------------------------------------------
_LOC_RE = re.compile(rb"\r\nlocation: [^\r]*/Patient/([A-Za-z0-9\-.]+)/_history/", re.I)


@dataclasses.dataclass
class Phase:
    """One measured phase: the latencies of its window and the CPU it cost."""

    name: str
    res: loadgen.Result
    cpu: CpuMeter

    @property
    def rps(self) -> float:
        return self.res.rps

    def summary(self) -> dict[str, Any]:
        return {"rps": round(self.res.rps, 1), "p50_ms": round(self.res.pct_ms(50), 2),
                "p99_ms": round(self.res.pct_ms(99), 2), "n": self.res.count, "errors": self.res.errors,
                "cpu_ms_per_req": self.cpu.per_request(self.res.total_completed),
                "cpu_bound_rps": self.cpu.cpu_bound_rate(self.res.total_completed),
                "machine_busy": self.cpu.busy_share()}


def merge(phases: list[Phase]) -> Phase:
    """One Phase from the alternating slices of the same measurement."""
    if len(phases) == 1:
        return phases[0]
    first = phases[0]
    statuses: dict[int, int] = {}
    for p in phases:
        for k, v in p.res.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    res = loadgen.Result(sum(p.res.seconds for p in phases), [x for p in phases for x in p.res.latencies_ns],
                         statuses, sum(p.res.errors for p in phases), sum(p.res.client_cpu_s for p in phases),
                         [x for p in phases for x in p.res.captured], sum(p.res.total_completed for p in phases))
    cpu = CpuMeter(first.cpu.app_pids, first.cpu.db_pids)
    for k in ("wall", "machine", "irq", "client", "app", "db", "other"):
        setattr(cpu, k, sum(getattr(p.cpu, k) for p in phases))
    return Phase(first.name, res, cpu)


def log_phase(ph: Phase) -> None:
    r = ph.res
    log(f"{ph.name:<18} {r.rps:8.0f} /s  p50 {r.pct_ms(50):6.2f} ms  p99 {r.pct_ms(99):6.2f} ms  "
        f"CPU ms/op {ph.cpu.per_request(r.total_completed)}  machine busy {ph.cpu.busy_share():.0%}  "
        f"CPU-bound {ph.cpu.cpu_bound_rate(r.total_completed):.0f}/s  "
        f"errors {r.errors}")


BALANCE = os.environ.get("BENCH_BALANCE", "1") != "0"


def http_phase(name: str, port: int, source: loadgen.RequestSource, seconds: float, warmup: float,
               meter: CpuMeter, capture: bool = False) -> Phase:
    """CLIENTS keep-alive connections, spread evenly over the workers (meter.app_pids) unless
    BENCH_BALANCE=0."""
    with meter:
        res = loadgen.run("127.0.0.1", port, source, connections=CLIENTS, duration=seconds, warmup=warmup,
                          capture=capture, balance_pids=meter.app_pids if BALANCE else None)
    return Phase(name, res, meter)


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


_PK, _RID = object(), object()  # placeholders in the index-row templates


@dataclasses.dataclass
class DependentRows:
    """Rows the server writes beside `resource` for one resource (search index, compartments):
    one table, its columns and their SQL types, and row templates with the resource's pk and id
    as placeholders."""

    table: str
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def insert_sql(self) -> Any:
        """One INSERT ... SELECT FROM unnest(arrays): all rows of the table in one short,
        cacheable statement with one parameter per column."""
        from psycopg import sql

        return sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in self.types))

    def delete_sql(self) -> Any:
        from psycopg import sql

        return sql.SQL("DELETE FROM {} WHERE res_pk = %s").format(sql.Identifier(self.table))

    def params(self, pk: int, rid: str) -> list[list[Any]]:
        return [[pk if v is _PK else rid if v is _RID else v for v in col] for col in zip(*self.rows)]


def dependent_rows(url: str, res_type: str, res_id: str) -> list[DependentRows]:
    """What the server wrote for one resource in every table keyed by `res_pk` (found from the
    schema, so the raw reference follows the server's write path as it evolves)."""
    import psycopg
    from psycopg import sql

    out: list[DependentRows] = []
    with psycopg.connect(url) as conn:
        pk = conn.execute("SELECT pk FROM resource WHERE res_type = %s AND res_id = %s",
                          (res_type, res_id)).fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'res_pk' ORDER BY table_name")]
        for table in tables:
            cols = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attidentity = '' AND NOT EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = a.attrelid "
                "AND d.adnum = a.attnum AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval%%') "
                "ORDER BY a.attnum", (table,)).fetchall()
            names = [c for c, _t in cols]
            rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE res_pk = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)), (pk,)).fetchall()
            if rows:
                tpl = [tuple(_PK if c == "res_pk" else _RID if v == res_id else v for c, v in zip(names, row))
                       for row in rows]
                out.append(DependentRows(table, names, [t for _c, t in cols], tpl))
    return out


class RawClients:
    """CLIENTS psycopg connections (autocommit off), each driven by its own thread, issuing the
    rows the server writes: `resource`, `resource_history` and the dependent rows (search index,
    compartments) the server wrote for a Patient, with one multi-row INSERT per table.

    The threads mostly wait on PostgreSQL (psycopg releases the GIL), so this measures the
    database; the client's own CPU is reported beside it.
    """

    def __init__(self, url: str, template: dict[str, Any]) -> None:
        import psycopg

        self.conns = [psycopg.connect(url, autocommit=False) for _ in range(CLIENTS)]
        self.template = template
        self.ids: list[str] = []
        self.dependent: list[tuple[DependentRows, Any, Any]] = []

    def set_dependent(self, dep: list[DependentRows]) -> None:
        c = self.conns[0]  # rendered once to plain SQL text: psycopg caches and prepares it
        self.dependent = [(d, d.insert_sql().as_string(c), d.delete_sql().as_string(c)) for d in dep]

    def rows_per_write(self) -> dict[str, int]:
        return {"resource": 1, "resource_history": 1, **{d.table: len(d.rows) for d, _i, _d in self.dependent}}

    def pids(self) -> list[int]:
        return [c.info.backend_pid for c in self.conns]

    def close(self) -> None:
        for c in self.conns:
            c.close()

    # the server's rows for create / read / update -------------------------------------------------
    def create(self, conn: Any, _rnd: random.Random) -> None:
        rid = str(uuid.uuid4())
        when = now_ms()
        text = stamped_text(self.template, rid, 1, when)
        with conn.cursor() as cur:
            cur.execute(SQL_INSERT, ("Patient", rid, 1, when, text))
            pk = cur.fetchone()[0]
            cur.execute(SQL_HISTORY, ("Patient", rid, 1, when, "POST", text))
            for dep, ins, _del in self.dependent:
                cur.execute(ins, dep.params(pk, rid))
        conn.commit()
        self.ids.append(rid)  # list.append is atomic under the GIL

    def read(self, conn: Any, rnd: random.Random) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT, ("Patient", rid))
            row = cur.fetchone()
        conn.commit()
        if row is None:
            raise LookupError(rid)

    def update(self, conn: Any, rnd: random.Random) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT + " FOR UPDATE", ("Patient", rid))
            pk, _t, _i, vid, last, _d, _body = cur.fetchone()
            vid += 1
            when = max(now_ms(), last)
            text = stamped_text({**self.template, "id": rid}, rid, vid, when)
            cur.execute(SQL_UPDATE, (vid, when, text, pk))
            cur.execute(SQL_HISTORY, ("Patient", rid, vid, when, "PUT", text))
            for dep, ins, dele in self.dependent:
                cur.execute(dele, (pk,))
                cur.execute(ins, dep.params(pk, rid))
        conn.commit()

    def phase(self, name: str, op: Callable[[Any, random.Random], None], seconds: float,
              warmup: float) -> Phase:
        """Every connection loops `op` for warmup+seconds; the window after warm-up counts."""
        lats: list[list[int]] = [[] for _ in self.conns]
        errors = [0] * len(self.conns)
        done = [0] * len(self.conns)
        bounds: dict[str, int] = {}
        barrier = threading.Barrier(len(self.conns) + 1)

        def work(k: int) -> None:
            conn, rnd, out, perf = self.conns[k], random.Random(k), lats[k], time.perf_counter_ns
            barrier.wait()
            t_measure, t_end = bounds["measure"], bounds["end"]
            while True:
                t0 = perf()
                if t0 >= t_end:
                    break
                try:
                    op(conn, rnd)
                except Exception:  # noqa: BLE001 - counted, the phase goes on
                    conn.rollback()
                    errors[k] += 1
                t1 = perf()
                done[k] += 1
                if t0 >= t_measure and t1 <= t_end:
                    out.append(t1 - t0)

        meter = CpuMeter([], self.pids)
        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(self.conns))]
        for t in threads:
            t.start()
        with meter:
            t0 = time.perf_counter_ns()
            bounds["measure"] = t0 + int(warmup * 1e9)
            bounds["end"] = bounds["measure"] + int(seconds * 1e9)
            barrier.wait()
            for t in threads:
                t.join()
        lat = [x for xs in lats for x in xs]
        res = loadgen.Result(seconds, lat, {200: len(lat)}, sum(errors), meter.client, [], sum(done))
        return Phase(name, res, meter)


# -- Synthea ingest ------------------------------------------------------------------------------
def synthea_ingest(port: int, files: list[Path], meter: CpuMeter) -> dict[str, Any]:
    """POST every bundle as a transaction, INGEST_CLIENTS at a time; resources/s over wall time."""
    import http.client

    socks = loadgen.balanced("127.0.0.1", port, INGEST_CLIENTS, meter.app_pids if BALANCE else None)

    bundles = []
    for f in files:
        data = f.read_bytes()
        bundles.append((f.name, data, len(json.loads(data)["entry"])))
    bundles.sort(key=lambda b: -len(b[1]))  # largest first: the clients finish together
    queue = list(bundles)
    lock = threading.Lock()
    done: dict[str, Any] = {"resources": 0, "bundles": 0, "failed": []}
    lat: list[float] = []

    def work(sock: Any) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.sock = sock  # the balanced connection (http.client reconnects by itself if it closes)
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

    threads = [threading.Thread(target=work, args=(sk,), daemon=True) for sk in socks]
    with meter:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    lat.sort()
    out = {"resources": done["resources"], "bundles": done["bundles"], "seconds": round(wall, 2),
           "resources_per_s": round(done["resources"] / wall, 1) if wall else 0.0,
           "failed": done["failed"],
           "bundle_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
           "bundle_max_ms": round(lat[-1] * 1000, 1) if lat else None,
           "cpu_ms_per_resource": meter.per_request(done["resources"]),
           "cpu_bound_resources_per_s": meter.cpu_bound_rate(done["resources"]),
           "machine_busy": meter.busy_share()}
    log(f"{'synthea ingest':<18} {out['resources_per_s']:8.0f} resources/s ({out['resources']} in "
        f"{wall:.1f}s)  CPU ms/resource {out['cpu_ms_per_resource']}")
    return out


# -- output --------------------------------------------------------------------------------------
def render_table(rows: list[tuple[str, str, Phase, Phase, float]], ingest: dict[str, Any]) -> str:
    head = (f"{'phase':<7} {'reference':<11} {'server/s':>9} {'ref/s':>8} {'ratio':>6} {'target':>7}  "
            f"{'srv p50':>7} {'srv p99':>7} {'ref p50':>7} {'ref p99':>7}  "
            f"{'srv CPU app+db':>14} {'ref CPU':>8}")
    lines = [head, "-" * len(head)]
    for phase, ref_name, srv, ref, target in rows:
        ratio = srv.rps / ref.rps if ref.rps else float("nan")
        tgt = f">={target:.2f}{'' if ratio >= target else '!'}" if target else ""
        sc, rc = srv.cpu.per_request(srv.res.total_completed), ref.cpu.per_request(ref.res.total_completed)
        ref_cpu = rc["app"] + rc["db"] + (rc["client"] if ref_name.startswith("raw") else 0)
        lines.append(
            f"{phase:<7} {ref_name:<11} {srv.rps:>9.0f} {ref.rps:>8.0f} {ratio:>6.2f} {tgt:>7}  "
            f"{srv.res.pct_ms(50):>7.2f} {srv.res.pct_ms(99):>7.2f} {ref.res.pct_ms(50):>7.2f} "
            f"{ref.res.pct_ms(99):>7.2f}  {sc['app']:>6.2f}+{sc['db']:<5.2f}ms {ref_cpu:>6.2f}ms")
    tgt = TARGETS["synthea_resources_per_s"]
    rps = ingest["resources_per_s"]
    c = ingest["cpu_ms_per_resource"]
    lines.append(
        f"{'ingest':<7} {'target':<11} {rps:>9.0f} {tgt:>8.0f} {rps / tgt:>6.2f} "
        f"{'>=1.00' + ('' if rps >= tgt else '!'):>7}  {'bundle p50 ' + str(ingest['bundle_p50_ms']):>15} "
        f"{'max ' + str(ingest['bundle_max_ms']):>15}  {c['app']:>6.2f}+{c['db']:<5.2f}ms")
    lines.append("(req/s; ingest in Synthea resources/s; latencies in ms; CPU = CPU-ms per request of the "
                 "server workers + PostgreSQL backends; '!' = target missed)")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def idle_share(seconds: float = 1.0) -> float:
    """How busy the machine is before the run (other engineers' tests skew every figure)."""
    m0, t0 = machine_busy(), time.perf_counter()
    time.sleep(seconds)
    return (machine_busy() - m0) / ((time.perf_counter() - t0) * loadgen.cpu_count())


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL") or DEFAULT_PG
    files = sorted(p for p in SYNTHEA_DIR.glob("*.json") if "Information" not in p.name)
    if not files:
        log(f"no Synthea bundles under {SYNTHEA_DIR}")
        return 2

    def _term(_sig: int, _frm: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _term)
    busy_before = idle_share()
    wait_idle = float(os.environ.get("BENCH_WAIT_IDLE", "30"))
    deadline = time.monotonic() + wait_idle
    if busy_before > 0.15 and wait_idle > 0:
        log(f"the machine is {busy_before:.0%} busy; waiting up to {wait_idle:g}s for it to calm down")
        while busy_before > 0.15 and time.monotonic() < deadline:
            busy_before = idle_share(2.0)
    if busy_before > 0.15:
        log(f"WARNING: the machine is {busy_before:.0%} busy before the run; figures will be low and noisy")
    tmp = Path(tempfile.mkdtemp(prefix="fhirbench-"))
    keep_logs = os.environ.get("BENCH_KEEP_LOGS") == "1"
    scratch = Scratch(admin_url)
    state = {"failed": True}
    with ExitStack() as stack:
        stack.callback(lambda: log(f"logs kept in {tmp}") if (keep_logs or state["failed"]) and any(tmp.glob("*.log"))
                       else shutil.rmtree(tmp, ignore_errors=True))
        stack.callback(scratch.drop_all)
        pid = os.getpid()
        srv_db, raw_db = f"fhirbench_{pid}", f"fhirbench_{pid}_raw"
        try:
            srv_url = scratch.create(srv_db)
            raw_url = scratch.create(raw_db)
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
                                 "--dicom-port", str(loadgen.free_port()),
                                 "--threads", str(THREADS), "--database-url", srv_url,
                                 "--data-dir", str(tmp / "data")], env, tmp)
        stack.callback(server.stop)
        server.wait_http(f"http://127.0.0.1:{port}/fhir/metadata")
        spids = server.wait_workers(port, WORKERS)
        srv_backends = backend_pids(scratch.admin_url, srv_db)
        host = f"127.0.0.1:{port}"
        log(f"server up on :{port} (workers {spids}); {seconds:g}s per phase after {warmup:g}s warm-up; "
            f"{CLIENTS} clients")

        variants = [patient(i) for i in range(64)]
        log(f"Patient body {len(dumps(variants[0]))} bytes")
        raw = RawClients(raw_url, variants[0])
        stack.callback(raw.close)

        rounds = max(1, int(os.environ.get("BENCH_ROUNDS", "2")))
        part = seconds / rounds

        def alternate(*runners: Callable[[float, float], Phase]) -> list[Phase]:
            """Server and reference take turns (rounds x seconds/rounds each), so a burst of
            load from elsewhere on the machine hits both sides alike."""
            got: list[list[Phase]] = [[] for _ in runners]
            for r in range(rounds):
                for i, run in enumerate(runners):
                    got[i].append(run(part, warmup if r == 0 else min(warmup, 0.25)))
            merged = [merge(g) for g in got]
            for ph in merged:
                log_phase(ph)
            return merged

        # the raw reference replays what the server writes for one create of variants[0]
        create_reqs = [loadgen.build_request("POST", "/fhir/Patient", host, dumps(p)) for p in variants]
        probe = loadgen.run("127.0.0.1", port, loadgen.cycle(create_reqs[:1]), connections=1, max_requests=1,
                            capture=True).captured[0]
        m = _LOC_RE.search(probe)
        if not m:
            raise RuntimeError(f"the server did not create a Patient: {probe[:500]!r}")
        if os.environ.get("BENCH_RAW_INDEX", "1") != "0":  # 0: resource + resource_history only
            raw.set_dependent(dependent_rows(srv_url, "Patient", m.group(1).decode()))
        log(f"rows per create/update (the server's, replayed raw): {raw.rows_per_write()}")

        # create
        s_create, r_create = alternate(
            lambda sec, wu: http_phase("server create", port, loadgen.cycle(create_reqs), sec, wu,
                                       CpuMeter(spids, srv_backends), capture=True),
            lambda sec, wu: raw.phase("raw insert", raw.create, sec, wu))
        ids = [m.group(1).decode() for h in s_create.res.captured if (m := _LOC_RE.search(h))]
        s_create.res.captured.clear()
        if not ids:
            raise RuntimeError(f"no ids from the create phase: {s_create.res.statuses}")

        # read; the bare app answers with the bytes of one server read
        one = loadgen.run("127.0.0.1", port, loadgen.cycle([loadgen.build_request("GET", f"/fhir/Patient/{ids[0]}", host)]),
                          connections=1, max_requests=1, capture=True).captured[0]
        head, _, body = one.partition(b"\r\n\r\n")
        hdrs = {k.lower(): v for k, v in (line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])}
        (tmp / "read_body.json").write_bytes(body)
        bare_port = loadgen.free_port()
        bare = Proc("bare", [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port),
                             "--workers", str(WORKERS), "--threads", str(THREADS),
                             "--body-file", str(tmp / "read_body.json"), "--content-type", hdrs["content-type"],
                             "--header", f"ETag: {hdrs['etag']}",
                             "--header", f"Last-Modified: {hdrs['last-modified']}"], env, tmp)
        stack.callback(bare.stop)
        bare.wait_http(f"http://127.0.0.1:{bare_port}/fhir/metadata")
        bpids = bare.wait_workers(bare_port, WORKERS)
        read_reqs = [loadgen.build_request("GET", f"/fhir/Patient/{i}", host) for i in ids]
        bare_host = f"127.0.0.1:{bare_port}"
        bare_reqs = [loadgen.build_request("GET", f"/fhir/Patient/{i}", bare_host) for i in ids]
        s_read, b_read, r_read = alternate(
            lambda sec, wu: http_phase("server read", port, loadgen.random_pick(read_reqs.__getitem__, len(ids)),
                                       sec, wu, CpuMeter(spids, srv_backends)),
            lambda sec, wu: http_phase("bare Flask read", bare_port,
                                       loadgen.random_pick(bare_reqs.__getitem__, len(ids)), sec, wu,
                                       CpuMeter(bpids, lambda: [])),
            lambda sec, wu: raw.phase("raw select", raw.read, sec, wu))
        bare.stop()

        # update, spread over every id created above
        upd_reqs = [loadgen.build_request("PUT", f"/fhir/Patient/{rid}", host, dumps({**variants[k % 64], "id": rid}))
                    for k, rid in enumerate(ids)]
        s_update, r_update = alternate(
            lambda sec, wu: http_phase("server update", port,
                                       loadgen.random_pick(upd_reqs.__getitem__, len(ids), seed=7), sec, wu,
                                       CpuMeter(spids, srv_backends)),
            lambda sec, wu: raw.phase("raw update", raw.update, sec, wu))
        raw.close()

        # Synthea transaction ingest
        ingest = synthea_ingest(port, files, CpuMeter(spids, srv_backends))

        rows = [("create", "raw INSERT", s_create, r_create, TARGETS["create_ratio"]),
                ("read", "bare Flask", s_read, b_read, TARGETS["read_ratio"]),
                ("update", "raw UPDATE", s_update, r_update, TARGETS["update_ratio"]),
                ("read", "raw SELECT", s_read, r_read, 0.0)]
        print(render_table(rows, ingest))
        for f in ingest["failed"]:
            print(f"  FAILED {f}")

        def ratio(a: Phase, b: Phase) -> float | None:
            return round(a.rps / b.rps, 3) if b.rps else None

        ratios = {"read_ratio": ratio(s_read, b_read), "create_ratio": ratio(s_create, r_create),
                  "update_ratio": ratio(s_update, r_update), "read_vs_raw_select_ratio": ratio(s_read, r_read),
                  "synthea_resources_per_s": ingest["resources_per_s"]}
        met = {k: (ratios[k] is not None and ratios[k] >= v) for k, v in TARGETS.items()}

        def cb(ph: Phase) -> float:
            return ph.cpu.cpu_bound_rate(ph.res.total_completed)

        cpu_bound = {"read_ratio": round(cb(s_read) / cb(b_read), 3) if cb(b_read) else None,
                     "create_ratio": round(cb(s_create) / cb(r_create), 3) if cb(r_create) else None,
                     "update_ratio": round(cb(s_update) / cb(r_update), 3) if cb(r_update) else None,
                     "synthea_resources_per_s": ingest["cpu_bound_resources_per_s"]}
        phases = (s_create, s_read, s_update, b_read, r_create, r_read, r_update)
        errors = sum(p.res.errors for p in phases)
        state["failed"] = bool(errors or ingest["failed"])
        result = {
            **ratios,
            "targets": TARGETS,
            "targets_met": met,
            "all_targets_met": all(met.values()),
            "cpu_bound_estimates": cpu_bound,
            "server": {"create": s_create.summary(), "read": s_read.summary(), "update": s_update.summary()},
            "reference": {"raw_insert": r_create.summary(), "bare_flask_read": b_read.summary(),
                          "raw_select": r_read.summary(), "raw_update": r_update.summary()},
            "synthea": {**ingest, "failed": len(ingest["failed"])},
            "errors": errors,
            "machine_busy_before": round(busy_before, 3),
            "config": {"clients": CLIENTS, "workers": WORKERS, "threads": THREADS, "seconds": seconds,
                       "rounds": rounds, "balanced_connections": BALANCE,
                       "warmup": warmup, "cpus": loadgen.cpu_count(), "ingest_clients": INGEST_CLIENTS,
                       "patient_bytes": len(dumps(variants[0])), "read_body_bytes": len(body),
                       "rows_per_write": raw.rows_per_write()},
        }
        print(json.dumps(result, separators=(",", ":")), flush=True)
    return 1 if state["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
