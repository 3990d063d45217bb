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

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from bench import loadgen



from bench.harness import (
    BALANCE, CLIENTS, DEFAULT_PG, SYNTHEA_DIR, THREADS, WORKERS, CpuMeter, Phase, Proc, Scratch, backend_pids,
    dumps, http_phase, idle_share, log, log_phase, merge, patient, pg_settings,
)
from bench.ingest import INGEST_CLIENTS, synthea_ingest
from bench.raw_pg import RawClients, dependent_rows

# the Location header of a create: the new Patient's id
_LOC_RE = re.compile(rb"\r\nlocation: [^\r]*/Patient/([A-Za-z0-9\-.]+)/_history/", re.I)
TARGETS = {"read_ratio": 0.6, "create_ratio": 0.5, "update_ratio": 0.5, "synthea_resources_per_s": 1500.0}


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

        settings = pg_settings(srv_url)
        log("PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
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
            "postgres": settings,
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
