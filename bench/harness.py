"""What every benchmark here stands on: scratch PostgreSQL databases, server processes, CPU meters of
workers and database backends, measured phases, and the realistic test Patient.

The figures are ratios against a reference measured in the same run, so the parts that start,
load and meter both sides live here once and every benchmark (`bench.run`, `bench.auth`,
`bench.search`, `bench.dicomweb` ...) meters them alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from bench import loadgen



HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYNTHEA_DIR = ROOT / "tests" / "data" / "synthea"  # shared with the tests (see its PROVENANCE.md)
CLIENTS = 8
WORKERS = 2
THREADS = 4
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



def idle_share(seconds: float = 1.0) -> float:
    """How busy the machine is before the run (other engineers' tests skew every figure)."""
    m0, t0 = machine_busy(), time.perf_counter()
    time.sleep(seconds)
    return (machine_busy() - m0) / ((time.perf_counter() - t0) * loadgen.cpu_count())


PG_SETTINGS = ("server_version", "autovacuum", "fsync", "synchronous_commit", "shared_buffers", "work_mem",
               "effective_cache_size", "random_page_cost", "max_parallel_workers_per_gather")


def pg_settings(url: str) -> dict[str, str]:
    """The PostgreSQL settings that decide plans and write costs, printed with every figure (a
    figure means little without them: this server runs with autovacuum off)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as c:
            return {k: c.execute(text(f"SHOW {k}")).scalar_one() for k in PG_SETTINGS}
    finally:
        engine.dispose()
