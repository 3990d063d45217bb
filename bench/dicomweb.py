"""DICOMweb bench: `python -m bench.dicomweb`.

Loads the same generated archive - BENCH_DICOMWEB_PATIENTS patients (default 100) x 2 studies x
2 series x 5 instances (2,000 distinct instances, 256x256 16-bit MR-like images; knobs below) -
by STOW-RS into `fhirserver serve` and into Orthanc with its DICOMweb plugin (Debian `orthanc`,
`orthanc-dicomweb`; skipped with a note when absent), then measures, with 8 concurrent
keep-alive clients (bench.loadgen), in rounds that alternate between the two (so load from
elsewhere on the machine hits both alike):

| phase | request (each a different target, shuffled, same order for both) | target |
|---|---|---|
| qido_studies | `GET /studies?PatientID=<one of the patients>` | >= 1.0 of Orthanc |
| qido_series | `GET /studies/{study}/series` | information |
| qido_instances | `GET /studies/{study}/series/{series}/instances` | information |
| wado_instance | `GET /studies/{s}/series/{s}/instances/{sop}`, multipart | >= 0.9 of Orthanc |
| wado_bare | the same files from a bare gunicorn+Flask handler (same framing and gunicorn config) | >= 0.6 (ours / bare) |

plus the rendered-thumbnail latency of a 512x512 CT instance (one client, no cache).

No response comes from a cache built by the benchmark's shape: every request of a phase names
another patient, study, series or instance, and the server keeps no per-path cache. Any non-2xx
answer, a failed STOW, or an archive that does not hold every instance fails the run (exit 1).

Environment: BENCH_SECONDS (8 per phase and peer, split over BENCH_ROUNDS, default 2),
BENCH_WARMUP (1), BENCH_DICOMWEB_PATIENTS (100), BENCH_DICOMWEB_SERIES_INSTANCES (5),
BENCH_DICOMWEB_ROWS (256), BENCH_DICOMWEB_ORTHANC=0 (skip Orthanc), BENCH_DICOMWEB_PG=1 (the
server on a fresh PostgreSQL database of FHIRSERVER_BENCH_DATABASE_URL's server, default
postgresql://postgres@127.0.0.1:5432/postgres, ANALYZEd after the load; its settings are
printed). Prints one JSON line last.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import requests

from bench import loadgen
from bench.harness import Proc, Scratch

CLIENTS = 8
WORKERS = 2
THREADS = 4
TARGET_BARE = 0.6
TARGET_QIDO = 1.0
TARGET_WADO = 0.9
STUDIES_PER_PATIENT = 2
SERIES_PER_STUDY = 2
STOW_BATCH = 50
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
MULTIPART = 'multipart/related; type="application/dicom"'


def log(msg: str) -> None:
    print(f"[bench.dicomweb] {msg}", file=sys.stderr, flush=True)


def _instance(patient: int, study: str, series: str, series_no: int, n: int, size: int, rng: Any,
              modality: str = "MR") -> tuple[str, bytes]:
    """One distinct instance (its own SOP Instance UID and pixels), as a Part 10 file."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = f"Bench^P{patient:05d}", f"BENCH-{patient:05d}"
    ds.PatientBirthDate, ds.PatientSex = f"19{50 + patient % 50:02d}0101", "MF"[patient % 2]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.StudyTime = f"2024{1 + patient % 12:02d}{1 + patient % 28:02d}", "101500"
    ds.AccessionNumber, ds.StudyDescription = f"ACC{patient:05d}{series_no}", "Bench study"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_no, n
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    if modality == "CT":
        yy, xx = np.mgrid[0:size, 0:size]
        img = (1024 + 600 * np.sin(xx / 17.0 + n) * np.cos(yy / 23.0)).clip(0, 4095).astype(np.uint16)
    else:
        img = rng.integers(0, 4096, (size, size), dtype=np.uint16)
    ds.PixelData = img.tobytes()
    ds.file_meta = FileMetaDataset()  # pydicom adds the Media Storage UIDs from the data set
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buf.getvalue()


def _stow(url: str, parts: list[bytes]) -> None:
    boundary = "bench-boundary-7d1c"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts) + f"--{boundary}--\r\n".encode()
    r = requests.post(url, data=body, timeout=600, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    if r.status_code != 200:
        raise RuntimeError(f"STOW-RS to {url}: {r.status_code} {r.text[:300]}")


def _wait(url: str, proc: Proc, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{proc.tail()}")
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


def _orthanc_exe() -> str | None:
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    return exe if exe and os.path.exists(ORTHANC_PLUGIN) else None


def _start_orthanc(exe: str, root: Path, port: int) -> Proc:
    (root / "db").mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench", "HttpPort": port, "DicomServerEnabled": False,
        "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "KeepAlive": True,
        "HttpCompressionEnabled": False, "StorageCompression": False, "SaveJobs": False,
        "Plugins": [ORTHANC_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    return Proc("orthanc", [exe, str(root / "orthanc.json")], dict(os.environ), root)


def _get(host: str, path: str, accept: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n".encode()


def _pg_settings(url: str) -> dict[str, str]:
    import psycopg

    names = ("server_version", "shared_buffers", "work_mem", "synchronous_commit", "fsync", "autovacuum",
             "max_connections", "random_page_cost", "effective_cache_size")
    with psycopg.connect(url, autocommit=True) as c:
        return {n: str(c.execute(f"SHOW {n}").fetchone()[0]) for n in names}


def main() -> int:  # noqa: C901, PLR0915 - one scripted run
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    rounds = max(1, int(os.environ.get("BENCH_ROUNDS", "2")))
    n_patients = int(os.environ.get("BENCH_DICOMWEB_PATIENTS", "100"))
    per_series = int(os.environ.get("BENCH_DICOMWEB_SERIES_INSTANCES", "5"))
    size = int(os.environ.get("BENCH_DICOMWEB_ROWS", "256"))
    use_pg = os.environ.get("BENCH_DICOMWEB_PG", "") == "1"
    use_orthanc = os.environ.get("BENCH_DICOMWEB_ORTHANC", "1") != "0"
    tmp = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    port, bare_port, orthanc_port = loadgen.free_port(), loadgen.free_port(), loadgen.free_port()
    env = dict(os.environ, FHIRSERVER_DATA_DIR=str(tmp / "var"))
    env.pop("FHIRSERVER_DATABASE_URL", None)
    scratch: Scratch | None = None
    procs: list[Proc] = []
    notes: list[str] = []
    failed: list[str] = []
    out: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        db_url = f"sqlite:///{tmp / 'var' / 'fhirserver.sqlite3'}"
        if use_pg:
            scratch = Scratch(os.environ.get("FHIRSERVER_BENCH_DATABASE_URL",
                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
            db_url = scratch.create(f"fhirbench_dw_{os.getpid()}")
            env["FHIRSERVER_DATABASE_URL"] = db_url
            out["postgresql"] = _pg_settings(db_url)
            log(f"PostgreSQL: {out['postgresql']}")
        server = Proc("server", [sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth",
                                 "--port", str(port), "--workers", str(WORKERS), "--threads", str(THREADS),
                                 "--dicom-port", "0"], env, tmp)
        procs.append(server)
        _wait(f"http://127.0.0.1:{port}/fhir/metadata", server)
        workers = server.wait_workers(port, WORKERS)
        base = f"http://127.0.0.1:{port}/dicomweb"
        orthanc: Proc | None = None
        exe = _orthanc_exe() if use_orthanc else None
        if use_orthanc and exe is None:
            notes.append("Orthanc or its DICOMweb plugin not installed (make orthanc); skipped")
        if exe:
            orthanc = _start_orthanc(exe, tmp / "orthanc", orthanc_port)
            procs.append(orthanc)
            _wait(f"http://127.0.0.1:{orthanc_port}/system", orthanc)
        obase = f"http://127.0.0.1:{orthanc_port}/dicom-web"

        # the archive: generated batch by batch, each batch sent to both (never all in memory)
        from pydicom.uid import generate_uid
        import numpy as np

        rng = np.random.default_rng(7)
        archive: list[tuple[str, str, str, str]] = []  # (patient id, study, series, sop)
        batch: list[bytes] = []
        t_ours = t_orth = 0.0
        nbytes = 0

        def flush() -> None:
            nonlocal t_ours, t_orth
            if not batch:
                return
            t0 = time.perf_counter()
            _stow(f"{base}/studies", batch)
            t_ours += time.perf_counter() - t0
            if orthanc is not None:
                t0 = time.perf_counter()
                _stow(f"{obase}/studies", batch)
                t_orth += time.perf_counter() - t0
            batch.clear()

        for p in range(n_patients):
            for _s in range(STUDIES_PER_PATIENT):
                study = generate_uid()
                for se in range(SERIES_PER_STUDY):
                    series = generate_uid()
                    for n in range(per_series):
                        sop, data = _instance(p, study, series, se + 1, n + 1, size, rng)
                        archive.append((f"BENCH-{p:05d}", study, series, sop))
                        batch.append(data)
                        nbytes += len(data)
                        if len(batch) >= STOW_BATCH:
                            flush()
        flush()
        total = len(archive)
        log(f"loaded {total} instances ({nbytes / total / 1024:.0f} KB each): ours {total / t_ours:.0f}/s"
            + (f", Orthanc {total / t_orth:.0f}/s" if orthanc else ""))
        out.update(instances=total, patients=n_patients, instance_kb=round(nbytes / total / 1024, 1),
                   stow_per_s={"fhirserver": round(total / t_ours, 1)})
        if orthanc is not None:
            out["stow_per_s"]["orthanc"] = round(total / t_orth, 1)
            stats = requests.get(f"http://127.0.0.1:{orthanc_port}/statistics", timeout=30).json()
            if stats.get("CountInstances") != total:
                failed.append(f"Orthanc holds {stats.get('CountInstances')} of {total} instances")
        if use_pg:
            import psycopg

            with psycopg.connect(db_url, autocommit=True) as c:
                c.execute("ANALYZE")

        from sqlalchemy import create_engine, text

        engine = create_engine(db_url)
        with engine.connect() as c:
            key_of = dict(c.execute(text("SELECT sop_uid, storage_key FROM dicom_instance")).all())
        engine.dispose()
        if len(key_of) != total:
            failed.append(f"our index holds {len(key_of)} of {total} instances")

        # correctness probes: both archives answer the same queries alike
        pid, study, series, _sop = archive[0]
        for name, b in (("fhirserver", base), ("Orthanc", obase if orthanc else None)):
            if b is None:
                continue
            got = requests.get(f"{b}/studies", params={"PatientID": pid}, timeout=30,
                               headers={"Accept": "application/dicom+json"})
            if got.status_code != 200 or len(got.json()) != STUDIES_PER_PATIENT:
                failed.append(f"{name}: studies?PatientID={pid} gave {got.status_code} {got.text[:200]}")
            got = requests.get(f"{b}/studies/{study}/series/{series}/instances", timeout=30,
                               headers={"Accept": "application/dicom+json"})
            if got.status_code != 200 or len(got.json()) != per_series:
                failed.append(f"{name}: series instances gave {got.status_code} {got.text[:200]}")

        bare = Proc("bare", [sys.executable, "-c", BARE, str(tmp / "var" / "dicom"), str(bare_port),
                             str(WORKERS), str(THREADS)], dict(os.environ), tmp)
        procs.append(bare)
        first_key = next(iter(key_of.values()))
        _wait(f"http://127.0.0.1:{bare_port}/file/{first_key}", bare)
        bare_workers = bare.wait_workers(bare_port, WORKERS)

        shuffle = random.Random(11)
        patients = sorted({a[0] for a in archive})
        studies = sorted({a[1] for a in archive})
        series_of = sorted({(a[1], a[2]) for a in archive})
        inst = list(archive)
        for seq in (patients, studies, series_of, inst):
            shuffle.shuffle(seq)
        series_study = {a[2]: a[1] for a in archive}
        jhost, ohost = f"127.0.0.1:{port}", f"127.0.0.1:{orthanc_port}"
        dj = "application/dicom+json"

        def reqs(host: str, root: str) -> dict[str, list[bytes]]:
            return {
                "qido_studies": [_get(host, f"{root}/studies?PatientID={p}", dj) for p in patients],
                "qido_series": [_get(host, f"{root}/studies/{s}/series", dj) for s in studies],
                "qido_instances": [_get(host, f"{root}/studies/{s}/series/{se}/instances", dj)
                                   for s, se in series_of],
                "wado_instance": [_get(host, f"{root}/studies/{series_study[a[2]]}/series/{a[2]}/instances/{a[3]}",
                                       MULTIPART) for a in inst],
            }

        peers: dict[str, tuple[int, dict[str, list[bytes]], list[int] | None]] = {
            "fhirserver": (port, reqs(jhost, "/dicomweb"), workers)}
        if orthanc is not None:
            peers["orthanc"] = (orthanc_port, reqs(ohost, "/dicom-web"), None)
        peers["bare"] = (bare_port, {"wado_instance": [
            _get(f"127.0.0.1:{bare_port}", f"/file/{key_of[a[3]]}", MULTIPART) for a in inst]}, bare_workers)
        phases = ("qido_studies", "qido_series", "qido_instances", "wado_instance")
        acc: dict[tuple[str, str], list[Any]] = {}
        turn = max(0.5, seconds / rounds)
        for r in range(rounds):
            order = list(peers) if r % 2 == 0 else list(reversed(peers))
            for phase in phases:
                for name in order:
                    p_port, p_reqs, pids = peers[name]
                    if phase not in p_reqs:
                        continue
                    res = loadgen.run("127.0.0.1", p_port, loadgen.cycle(p_reqs[phase]), connections=CLIENTS,
                                      duration=turn, warmup=warmup, balance_pids=pids)
                    acc.setdefault((name, phase), []).append(res)
                    if res.errors or not res.ok:
                        failed.append(f"{name} {phase}: {res.errors} errors, statuses {res.statuses}")
        figures: dict[str, dict[str, Any]] = {}
        for (name, phase), results in acc.items():
            count, secs = sum(x.ok for x in results), sum(x.seconds for x in results)
            lat = sorted(v for x in results for v in x.latencies_ns)
            figures.setdefault(phase, {})[name] = {
                "rps": round(count / secs, 1) if secs else 0.0,
                "p50_ms": round(lat[len(lat) // 2] / 1e6, 2) if lat else float("nan")}
        print(f"DICOMweb, {total} instances of {out['instance_kb']:.0f} KB, {n_patients} patients, "
              f"{n_patients * STUDIES_PER_PATIENT} studies; {CLIENTS} clients; {rounds} alternating rounds; "
              f"{'PostgreSQL' if use_pg else 'SQLite'}; load before {out['load_before']}")
        print(f"  {'phase':16s} {'fhirserver/s':>13s} {'p50 ms':>7s} {'Orthanc/s':>10s} {'p50 ms':>7s} "
              f"{'ratio':>6s}  target")
        ratios: dict[str, float] = {}
        for phase in phases:
            f = figures.get(phase, {})
            ours, orth = f.get("fhirserver"), f.get("orthanc")
            ratio = ours["rps"] / orth["rps"] if ours and orth and orth["rps"] else float("nan")
            if orth:
                ratios[phase + "_vs_orthanc"] = round(ratio, 3)
            target = {"qido_studies": f">= {TARGET_QIDO}", "wado_instance": f">= {TARGET_WADO}"}.get(phase, "-")
            print(f"  {phase:16s} {ours['rps'] if ours else 0:13.0f} {ours['p50_ms'] if ours else 0:7.1f} "
                  f"{orth['rps'] if orth else float('nan'):10.0f} {orth['p50_ms'] if orth else float('nan'):7.1f} "
                  f"{ratio:6.2f}  {target}")
        bare_f = figures.get("wado_instance", {}).get("bare")
        if bare_f:
            ratios["wado_vs_bare"] = round(figures["wado_instance"]["fhirserver"]["rps"] / bare_f["rps"], 3)
            print(f"  wado_instance vs bare handler {bare_f['rps']:.0f}/s: {ratios['wado_vs_bare']:.2f} "
                  f"(target >= {TARGET_BARE})")

        # thumbnail latency, one client, a different 512x512 CT instance each time (no cache anywhere)
        t_study, t_series = generate_uid(), generate_uid()
        cts = [_instance(0, t_study, t_series, 9, i + 1, 512, rng, modality="CT") for i in range(20)]
        _stow(f"{base}/studies", [d for _s, d in cts])
        lat = []
        sess = requests.Session()
        for i in range(60):
            s = cts[i % len(cts)][0]
            t = time.perf_counter()
            r = sess.get(f"{base}/studies/{t_study}/series/{t_series}/instances/{s}/thumbnail",
                         headers={"Accept": "image/jpeg"}, timeout=30)
            lat.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                failed.append(f"thumbnail: {r.status_code}")
                break
        lat = sorted(lat[5:]) or [float("nan")]
        p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        print(f"  thumbnail 512x512 CT: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        for n in notes:
            print("  note:", n)
        for f in failed:
            print("  FAILED:", f)
        targets = {"wado_vs_bare": ratios.get("wado_vs_bare", 0) >= TARGET_BARE}
        if "qido_studies_vs_orthanc" in ratios:
            targets["qido_studies_vs_orthanc"] = ratios["qido_studies_vs_orthanc"] >= TARGET_QIDO
            targets["wado_instance_vs_orthanc"] = ratios["wado_instance_vs_orthanc"] >= TARGET_WADO
        out.update(figures=figures, ratios=ratios, targets_met=targets, thumbnail_p50_ms=round(p50, 1),
                   thumbnail_p95_ms=round(p95, 1), database="postgresql" if use_pg else "sqlite",
                   load_after=[round(x, 2) for x in os.getloadavg()], failed=failed, notes=notes)
        print(json.dumps(out))
        return 1 if failed else 0
    finally:
        for p in procs:
            p.stop()
        if scratch is not None:
            scratch.drop_all()
        if not failed and not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp}")


if __name__ == "__main__":
    sys.exit(main())
