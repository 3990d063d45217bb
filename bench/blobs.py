"""Blob store bench: `python -m bench.blobs`.

The same DICOM node and HTTP server run twice in one run, once on the local data folder (the
default) and once on an S3-compatible object store (`--blob-url`, a moto server started here in
its own process), and take turns:

- C-STORE throughput: synthetic 512x512 CT instances (bench.dicom's) sent by dcmtk storescu over
  four associations at once into `fhirserver dicom` (index and ImagingStudy included);
- WADO-RS instance retrieval throughput: 8 keep-alive clients (bench.loadgen) fetching those
  instances from `fhirserver serve` (multipart/related, streamed from the store).

moto is an in-memory S3 written in Python on the same two cores, so the object-store figures are
a floor (a real S3, MinIO or Ceph RGW on other machines serves far more); the ratios say what the
store costs the server here, not what a deployment gets.

Environment: BENCH_BLOBS_COUNT (instances per round, default 200), BENCH_SECONDS (WADO phase,
default 8), BENCH_WARMUP (default 1), BENCH_ROUNDS (default 2). Prints a table, then one JSON line.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.dicom import DCMTK_ENV, _make, _send, _stop, _wait_echo
from bench.dicomweb import CLIENTS, THREADS, WORKERS, _wait

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
ASSOCIATIONS = 4


def log(msg: str) -> None:
    print(f"[bench.blobs] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _moto(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto server exited")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/bench", method="PUT"),
                                   timeout=5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto server did not start")


class Variant:
    """One store: its data folder, DICOM node and HTTP server."""

    def __init__(self, name: str, blob_url: str, var: Path) -> None:
        self.name, self.blob_url, self.var = name, blob_url, var
        self.dicom_port, self.http_port = loadgen.free_port(), loadgen.free_port()
        self.env = dict(os.environ, **AWS, FHIRSERVER_DATA_DIR=str(var), FHIRSERVER_BLOB_URL=blob_url,
                        FHIRSERVER_LOG_REQUESTS="0", FHIRSERVER_JOB_THREADS="0")
        self.env.pop("FHIRSERVER_DATABASE_URL", None)
        self.procs: list[subprocess.Popen] = []
        self.cstore_s = 0.0
        self.cstore_n = 0
        self.wado: list[Any] = []

    def start(self, processes: int) -> None:
        node = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "dicom", "--accept-unknown",
                                 "--dicom-port", str(self.dicom_port), "--processes", str(processes)],
                                env={**self.env, **{k: v for k, v in DCMTK_ENV.items() if k == "TCP_NODELAY"}},
                                stdout=subprocess.DEVNULL, stderr=open(self.var.parent / f"{self.var.name}-node.log", "wb"))
        self.procs.append(node)
        _wait_echo(self.dicom_port, "FHIRSERVER", node, timeout=300)
        http = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth",
                                 "--port", str(self.http_port), "--workers", str(WORKERS), "--threads", str(THREADS),
                                 "--dicom-port", "0"], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=open(self.var.parent / f"{self.var.name}-serve.log", "wb"))
        self.procs.append(http)
        _wait(f"http://127.0.0.1:{self.http_port}/fhir/metadata", http, timeout=300)

    def requests(self) -> list[bytes]:
        db = sqlite3.connect(self.var / "fhirserver.sqlite3")
        rows = db.execute("SELECT study_uid, series_uid, sop_uid FROM dicom_instance ORDER BY pk").fetchall()
        db.close()
        host = f"127.0.0.1:{self.http_port}"
        return [(f"GET /dicomweb/studies/{st}/series/{se}/instances/{sop} HTTP/1.1\r\nHost: {host}\r\n"
                 'Accept: multipart/related; type="application/dicom"\r\n\r\n').encode() for st, se, sop in rows]

    def stop(self) -> None:
        for p in reversed(self.procs):
            _stop(p)


def main() -> int:
    count = int(os.environ.get("BENCH_BLOBS_COUNT", "200"))
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    processes = loadgen.cpu_count()
    import signal

    def _terminated(*_: Any) -> None:  # the servers are stopped on a timeout too (once)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(1)
    signal.signal(signal.SIGTERM, _terminated)
    tmp = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    s3_port = loadgen.free_port()
    moto = _moto(s3_port, tmp / "moto.log")
    variants = [Variant("local folder", "", tmp / "local"),
                Variant("object store", f"s3://bench/fhir?endpoint=http://127.0.0.1:{s3_port}", tmp / "s3")]
    try:
        for v in variants:
            log(f"starting the node and server on the {v.name}")
            v.start(processes)
        per = count // ASSOCIATIONS
        batches = [[_make(tmp / f"in{r}_{k}", per)[1] for k in range(ASSOCIATIONS)] for r in range(rounds)]
        mb_each = batches[0][0][0].stat().st_size / 1e6
        warm = _make(tmp / "warm", 4)[1]
        for v in variants:
            _send(v.dicom_port, "FHIRSERVER", [warm])
        for r, batch in enumerate(batches):  # the same new files to each store, turns alternating
            for v in variants if r % 2 == 0 else variants[::-1]:
                log(f"C-STORE round {r + 1} into the {v.name}")
                v.cstore_s += _send(v.dicom_port, "FHIRSERVER", batch)
                v.cstore_n += per * ASSOCIATIONS
        for r in range(rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                log(f"WADO-RS round {r + 1} from the {v.name}")
                v.wado.append(loadgen.run("127.0.0.1", v.http_port, loadgen.cycle(v.requests()),
                                          connections=CLIENTS, duration=seconds, warmup=warmup))
    finally:
        for v in variants:
            v.stop()
        _stop(moto)
    load = os.getloadavg()[0]
    out: dict[str, Any] = {"instances": variants[0].cstore_n, "instance_mb": round(mb_each, 2),
                           "load_avg_1m": round(load, 1)}
    print(f"Blob stores: {variants[0].cstore_n} CT instances of {mb_each:.2f} MB per store over "
          f"{ASSOCIATIONS} associations, WADO-RS with {CLIENTS} clients, {rounds} rounds (stores take turns); "
          f"object store = moto server (Python, in memory, same machine); load average {load:.1f}")
    print(f"  {'store':14s} {'C-STORE/s':>10s} {'MB/s':>7s} {'WADO-RS/s':>10s} {'MB/s':>7s} {'p50 ms':>7s} {'errors':>7s}")
    for v in variants:
        best = max(v.wado, key=lambda res: res.rps)
        ips = v.cstore_n / v.cstore_s
        bad = best.errors + sum(n for s, n in best.statuses.items() if s != 200)
        print(f"  {v.name:14s} {ips:10.1f} {ips * mb_each:7.1f} {best.rps:10.1f} {best.rps * mb_each:7.1f} "
              f"{best.pct_ms(50):7.1f} {bad:7d}")
        key = "local" if not v.blob_url else "s3"
        out[f"cstore_{key}_ips"] = round(ips, 1)
        out[f"wado_{key}_rps"] = round(best.rps, 1)
        out[f"wado_{key}_errors"] = bad
    out["cstore_s3_vs_local"] = round(out["cstore_s3_ips"] / out["cstore_local_ips"], 2)
    out["wado_s3_vs_local"] = round(out["wado_s3_rps"] / out["wado_local_rps"], 2)
    print(f"  object store vs local folder: C-STORE {out['cstore_s3_vs_local']:.2f}, "
          f"WADO-RS {out['wado_s3_vs_local']:.2f}")
    print(json.dumps(out))
    return 1 if out["wado_local_errors"] or out["wado_s3_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
