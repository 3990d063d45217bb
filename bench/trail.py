"""What the access audit trail costs per event, on both sides: the writer's CPU in this process and
the PostgreSQL backend's CPU (read from /proc/<backend pid>/stat, so the database must run on
this machine), for N queued reads flushed in one go, plus the request thread's `record()` cost.

    .venv/bin/python -m bench.trail [N]        # default 5000 events, 3 rounds (best of)

CPU time of the calling thread (not wall time, nor the background threads of the services): robust to whatever else the shared machine runs.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.harness import DEFAULT_PG, Scratch, patient


def _backend_cpu(pid: int) -> float:
    """utime + stime of a PostgreSQL backend, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _queue(audit: Any, refs: list[str], n: int) -> None:
    from fhirserver import requestid

    who = {"reference": "Practitioner/bench", "client_id": "bench-client"}
    for i in range(n):
        token = requestid.bind(f"req-{i}")
        try:
            audit.record(who=who, action="R", interaction="read", references=[refs[i % len(refs)]],
                         remote="127.0.0.1")
        finally:
            requestid.unbind(token)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 5000
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    from sqlalchemy import text

    from fhirserver.config import Settings
    from fhirserver.heap import settle
    from fhirserver.services import build_services

    scratch = Scratch(os.environ.get("FHIRSERVER_BENCH_DATABASE_URL") or DEFAULT_PG)
    try:
        url = scratch.create(f"fhirbench_trail_{os.getpid()}")
        services = build_services(Settings(database_url=url), upgrade_schema=True)
        repo, audit = services.repo, services.audit
        settle()  # as a started server process does (fhirserver.heap)
        audit.interval = 3600.0  # flushed below, in this thread
        audit._bound = lambda: None  # a full batch must not wake the writer thread mid-measurement
        with repo.transaction(write=True) as tx:
            pats = [tx.create("Patient", patient(i)).res_id for i in range(200)]
            obs = [tx.create("Observation", {"resourceType": "Observation", "status": "final",
                                             "code": {"text": "x"}, "subject": {"reference": f"Patient/{p}"}}).res_id
                   for p in pats[:50]]
        refs = [f"Patient/{p}" for p in pats] + [f"Observation/{o}" for o in obs]
        _queue(audit, refs, 200)  # warm: statements, pool, the writer thread started
        audit.flush()
        best: dict[str, float] = {}
        for _ in range(rounds):
            t0 = time.thread_time()
            _queue(audit, refs, n)
            rec = time.thread_time() - t0
            with repo.engine.connect() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            b0, t0 = _backend_cpu(pid), time.thread_time()
            written = audit.flush()
            app, backend = time.thread_time() - t0, _backend_cpu(pid) - b0
            with repo.engine.connect() as conn:
                same = conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            if written != n or not same:
                raise RuntimeError(f"wrote {written} of {n} (same backend: {same})")
            for key, value in (("record", rec), ("flush_app", app), ("flush_pg", backend)):
                best[key] = min(best.get(key, value), value)
        ms = {k: 1000 * v / n for k, v in best.items()}
        print(f"audit trail, {n} events per flush, best of {rounds} (CPU ms per event): "
              f"record() {ms['record']:.4f}, writer app {ms['flush_app']:.4f}, PostgreSQL backend {ms['flush_pg']:.4f}")
        services.close()
    finally:
        scratch.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
