"""Bulk export benchmark: `$export` of the generated data set in resources/s and memory growth.

Loads BENCH_PATIENTS (default 100,000) generated Patients with their reports, observations and
appointments (bench.search's fixed-seed generator) into a fresh PostgreSQL database, kicks off a
system-level `$export` through the app, runs the export job in this process, and samples the
process's resident memory while it runs. Targets: >= 10,000 resources/s, < 100 MB growth.
Prints a table and a last JSON line.

    .venv/bin/python -m bench.export            # BENCH_PATIENTS=20000 for a quicker run
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.search import DEFAULT_PG, load

TARGET_RATE = 10_000
TARGET_GROWTH_MB = 100


def log(msg: str) -> None:
    print(f"[bench.export] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples resident memory every 20 ms in a thread; `peak` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> int:
    n = int(os.environ.get("BENCH_PATIENTS", "100000"))
    admin_url = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL", DEFAULT_PG)
    dbname = f"fhirbench_export_{os.getpid()}"
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{dbname}"'))
    try:
        return _run(admin_url.rsplit("/", 1)[0] + "/" + dbname, n)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


def _run(url: str, n: int) -> int:
    from fhirserver.app import create_app
    from fhirserver.config import Settings

    data_dir = Path(tempfile.mkdtemp())
    app = create_app(Settings(database_url=url, base_url="http://bench", data_dir=data_dir,
                              log_requests=False, insecure_no_auth=True), upgrade_schema=True)
    services = app.extensions["fhirserver"]
    count, seconds, _ = load(services, n)
    log(f"loaded {count} resources in {seconds:.0f} s")
    c = app.test_client()
    r = c.get("/fhir/$export", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.get_data(as_text=True)
    status = r.headers["Content-Location"].replace("http://bench", "")
    worker = services.jobs.worker(services, threads=1)
    base = rss_mb()
    t0 = time.perf_counter()
    with PeakRss() as mem:
        worker.run_pending()
    took = time.perf_counter() - t0
    m = c.get(status).get_json()
    exported = sum(o["count"] for o in m["output"])
    size = sum(p.stat().st_size for p in (data_dir / "exports").rglob("*.ndjson"))
    rate = exported / took
    growth = mem.peak - base
    print(f"{'resources exported':<28}{exported:>12}")
    print(f"{'files':<28}{len(m['output']):>12}")
    print(f"{'NDJSON MB':<28}{size / 2**20:>12.1f}")
    print(f"{'seconds':<28}{took:>12.2f}")
    print(f"{'resources/s':<28}{rate:>12.0f}   (target >= {TARGET_RATE})")
    print(f"{'peak RSS growth MB':<28}{growth:>12.1f}   (target < {TARGET_GROWTH_MB})")
    print(json.dumps({"bench": "export", "patients": n, "resources": exported, "seconds": round(took, 2),
                      "resources_per_s": round(rate), "rss_growth_mb": round(growth, 1),
                      "ok": rate >= TARGET_RATE and growth < TARGET_GROWTH_MB}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
