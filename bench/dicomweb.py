"""DICOMweb bench: `python -m bench.dicomweb`.

- WADO-RS instance retrieval throughput, 8 concurrent keep-alive clients (bench.loadgen), of
  `fhirserver serve` against a bare gunicorn+Flask handler serving the same stored files with
  the same multipart framing and gunicorn configuration, in the same run (target ratio >= 0.6);
- rendered-thumbnail latency p50/p95 of a 512x512 CT instance (one client, no cache).

The server runs with --insecure-no-auth on SQLite in a scratch folder (or on
FHIRSERVER_BENCH_DATABASE_URL's server, a fresh database, when BENCH_DICOMWEB_PG=1).
Environment: BENCH_SECONDS (default 8), BENCH_WARMUP (default 1). Prints one JSON line last.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import requests

from bench import loadgen

CLIENTS = 8
WORKERS = 2
THREADS = 4
TARGET = 0.6
INSTANCES = 20


def log(msg: str) -> None:
    print(f"[bench.dicomweb] {msg}", file=sys.stderr, flush=True)


def _ct(study: str, series: str, n: int, size: int = 512) -> bytes:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientName, ds.PatientID = "Bench^Ben", "BENCH-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "CT", 1, n
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    yy, xx = np.mgrid[0:size, 0:size]
    img = (1024 + 600 * np.sin(xx / 17.0 + n) * np.cos(yy / 23.0)).clip(0, 4095).astype(np.uint16)
    ds.PixelData = img.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited")
        try:
            requests.get(url, timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


BARE = r'''
import sys
from pathlib import Path
from flask import Flask, Response
from gunicorn.app.base import BaseApplication
root, port, workers, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
app = Flask("bare-dicomweb")
B = "dicomweb-0123456789abcdef01234567"
@app.get("/file/<key>")
def get(key):
    path = root / "objects" / key[:2] / key[2:4] / key
    head = f"--{B}\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n".encode()
    tail = f"\r\n--{B}--\r\n".encode()
    size = path.stat().st_size
    def gen():
        yield head
        with open(path, "rb") as f:
            while True:
                c = f.read(1 << 20)
                if not c:
                    break
                yield c
        yield tail
    r = Response(gen(), content_type=f'multipart/related; type="application/dicom"; boundary={B}',
                 direct_passthrough=True)
    r.headers["Content-Length"] = str(len(head) + size + len(tail))
    return r
class S(BaseApplication):
    def load_config(self):
        for k, v in (("bind", f"127.0.0.1:{port}"), ("workers", workers), ("worker_class", "gthread"),
                     ("threads", threads), ("timeout", 120), ("keepalive", 30), ("accesslog", None)):
            self.cfg.set(k, v)
    def load(self):
        return app
S().run()
'''


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    port, bare_port = loadgen.free_port(), loadgen.free_port()
    env = dict(os.environ, FHIRSERVER_DATA_DIR=str(tmp / "var"))
    env.pop("FHIRSERVER_DATABASE_URL", None)
    procs: list[subprocess.Popen] = []
    try:
        server = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth",
                                   "--port", str(port), "--workers", str(WORKERS), "--threads", str(THREADS),
                                   "--dicom-port", "0"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        procs.append(server)
        base = f"http://127.0.0.1:{port}/dicomweb"
        _wait(f"http://127.0.0.1:{port}/fhir/metadata", server)
        from pydicom.uid import generate_uid

        study, series = generate_uid(), generate_uid()
        parts = [_ct(study, series, i + 1) for i in range(INSTANCES)]
        boundary = "bench-boundary"
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                        for p in parts) + f"--{boundary}--\r\n".encode()
        t0 = time.perf_counter()
        r = requests.post(f"{base}/studies", data=body, timeout=120, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        stow_s = time.perf_counter() - t0
        assert r.status_code == 200, r.text[:500]
        insts = requests.get(f"{base}/studies/{study}/series/{series}/instances", timeout=30).json()
        sops = [i["00080018"]["Value"][0] for i in insts]
        import sqlite3

        db = sqlite3.connect(tmp / "var" / "fhirserver.sqlite3")
        keys = [k for (k,) in db.execute("SELECT storage_key FROM dicom_instance ORDER BY instance_number")]
        db.close()
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(tmp / "var" / "dicom"), str(bare_port),
                                 str(WORKERS), str(THREADS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(bare)
        _wait(f"http://127.0.0.1:{bare_port}/file/{keys[0]}", bare)

        accept = 'Accept: multipart/related; type="application/dicom"\r\n'
        host = f"127.0.0.1:{port}"
        server_reqs = [(f"GET /dicomweb/studies/{study}/series/{series}/instances/{s} HTTP/1.1\r\n"
                        f"Host: {host}\r\n{accept}\r\n").encode() for s in sops]
        bare_reqs = [(f"GET /file/{k} HTTP/1.1\r\nHost: 127.0.0.1:{bare_port}\r\n{accept}\r\n").encode()
                     for k in keys]
        results: dict[str, list[Any]] = {"server": [], "bare": []}
        for _round in range(2):
            results["server"].append(loadgen.run("127.0.0.1", port, loadgen.cycle(server_reqs),
                                                 connections=CLIENTS, duration=seconds, warmup=warmup))
            results["bare"].append(loadgen.run("127.0.0.1", bare_port, loadgen.cycle(bare_reqs),
                                               connections=CLIENTS, duration=seconds, warmup=warmup))
        srv = max(results["server"], key=lambda r: r.rps)
        ref = max(results["bare"], key=lambda r: r.rps)
        # thumbnail latency, one client, a different instance each time (no cache anywhere)
        lat = []
        sess = requests.Session()
        for i in range(60):
            s = sops[i % len(sops)]
            t = time.perf_counter()
            r = sess.get(f"{base}/studies/{study}/series/{series}/instances/{s}/thumbnail",
                         headers={"Accept": "image/jpeg"}, timeout=30)
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        lat = sorted(lat[5:])
        p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        size_kb = len(parts[0]) / 1024
        print(f"WADO-RS instance ({size_kb:.0f} KB), {CLIENTS} clients: server {srv.rps:.0f}/s "
              f"(p50 {srv.pct_ms(50):.1f} ms, errors {srv.errors}, statuses {srv.statuses}), "
              f"bare handler {ref.rps:.0f}/s -> ratio {srv.rps / ref.rps:.2f} (target >= {TARGET})")
        print(f"thumbnail 512x512 CT: p50 {p50:.1f} ms, p95 {p95:.1f} ms; STOW of {INSTANCES} instances "
              f"{stow_s:.2f} s")
        print(json.dumps({"wado_rs_rps": round(srv.rps, 1), "bare_rps": round(ref.rps, 1),
                          "wado_rs_ratio": round(srv.rps / ref.rps, 3), "target": TARGET,
                          "thumbnail_p50_ms": round(p50, 1), "thumbnail_p95_ms": round(p95, 1),
                          "stow_instances_per_s": round(INSTANCES / stow_s, 1)}))
        return 0
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
