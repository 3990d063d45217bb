"""DICOM part of the bench: synthetic 512x512 16-bit CT instances (25 per study, 2 studies per
patient, each instance its own SOP Instance UID) sent by dcmtk storescu over one association and
over four at once, into our node (index + ImagingStudy included) and, in the same run, into
three references: dcmtk's `storescp --fork` writing to disk, a bare pynetdicom SCP that only
writes the received bytes (`bench/bare_scp.py`, the library's ceiling) and Orthanc (Debian
package `orthanc`, on loopback ports of its own; skipped when not installed), which indexes
every instance before it answers, as our node does. TCP_NODELAY on every peer. Every peer gets
the same files once (fresh files per round); after the run each must hold every distinct
instance it acknowledged (files written, or instances indexed) or the run fails (exit 1), as
it does when any storescu fails.

Also measured for our node: the time from storescu's exit until the ImagingStudy (with all its
instances) is searchable, and the resident memory growth of the node (all its processes) across a
long run of BENCH_DICOM_LONG distinct instances (default 2,000; fresh UIDs for every batch,
nothing re-sent) after warm-up.

    .venv/bin/python -m bench.dicom [--count 500] [--processes N]

Environment: BENCH_DICOM_COUNT (instances per phase, default 500), BENCH_DICOM_LONG,
BENCH_DICOM_PROCESSES (receiving processes of our node, default CPU count),
BENCH_DICOM_DATABASE_URL (default: a fresh SQLite database in the temp folder),
FHIRSERVER_DICOM_FSYNC=0 (our node acknowledges without flushing each file to disk: the
figure without durability against power loss; the default flushes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_echo(port: int, aec: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}")
        if subprocess.run(["echoscu", "-aec", aec, "127.0.0.1", str(port)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("peer did not start")


SERIES_PER_STUDY = 5
INSTANCES_PER_SERIES = 5  # a study of 25 instances; two studies per patient


def _make(folder: Path, count: int, tag: str = "") -> tuple[str, list[Path]]:
    """`count` distinct CT instances (each its own SOP Instance UID) over count/25 studies of
    count/50 patients (`tag` keeps the patients of different batches apart); returns the last
    study's UID and the files."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
    paths = []
    study = series = ""
    per_study = SERIES_PER_STUDY * INSTANCES_PER_SERIES
    for n in range(count):
        if n % per_study == 0:
            study = generate_uid()
        if n % INSTANCES_PER_SERIES == 0:
            series = generate_uid()
        patient = n // (2 * per_study)
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.PatientName, ds.PatientID = f"Bench^Ct{tag}{patient}", f"BENCH-{tag}{folder.name}-{patient}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.Modality = "20240101", "CT"
        ds.SeriesNumber = (n // INSTANCES_PER_SERIES) % SERIES_PER_STUDY + 1
        ds.InstanceNumber = n % INSTANCES_PER_SERIES + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        p = folder / f"{n:05d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return study, paths


DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")  # dcmtk (and Orthanc, built on it) leave Nagle on unless told


def _send(port: int, aec: str, folders: list[Path] | list[list[Path]]) -> float:
    """One storescu (one association) per entry, all at once; seconds until all are done."""
    t0 = time.perf_counter()
    procs = []
    for entry in folders:
        paths = [str(p) for p in entry] if isinstance(entry, list) else [str(entry)]
        procs.append(subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", aec, "+sd", "127.0.0.1", str(port),
                                       *paths], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV))
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read().decode()[-500:])
    return time.perf_counter() - t0


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Peer:
    def __init__(self, name: str, aec: str, start: Callable[[int], subprocess.Popen]) -> None:
        self.name, self.aec, self.start = name, aec, start


def _orthanc(tmpd: Path, http_port: int) -> Callable[[int], subprocess.Popen] | None:
    exe = shutil.which("Orthanc") or (os.path.exists("/usr/sbin/Orthanc") and "/usr/sbin/Orthanc") or None
    if not exe:
        return None

    def start(port: int) -> subprocess.Popen:
        root = tmpd / "orthanc"
        (root / "db").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench", "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http_port,
            "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
            "StorageCompression": False, "Plugins": [], "DicomServerEnabled": True,
            "UnknownSopClassAccepted": True, "SaveJobs": False, "ConcurrentJobs": 2,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        return subprocess.Popen([exe, str(root / "orthanc.json")], env=DCMTK_ENV,
                                stdout=subprocess.DEVNULL, stderr=open(root / "orthanc.log", "wb"))

    return start


_REPOS: dict[tuple[str, str], Any] = {}


def _searchable(db_url: str, data_dir: Path, study_uid: str, count: int) -> Callable[[], bool]:
    """A probe: is the ImagingStudy of this study searchable with all `count` instances?"""
    from fhirserver.config import settings_from_env
    from fhirserver.services import build_services

    key = (db_url, str(data_dir))
    if key not in _REPOS:  # one repository (engine, compiled queries) for every probe
        _REPOS[key] = build_services(settings_from_env({}, data_dir=data_dir, database_url=db_url)).repo
    repo = _REPOS[key]

    from dicom.fhir import has_identifier, search
    from fhirserver.access import SystemJob

    value = f"urn:oid:{study_uid}"
    policy = SystemJob("bench probe")

    def probe() -> bool:  # by identifier: the study among thousands, one indexed search
        with repo.transaction() as tx:
            found = list(search(tx, "ImagingStudy", [("identifier", f"urn:dicom:uid|{value}")],
                                lambda b: has_identifier(b, value, "urn:dicom:uid"), limit=2, policy=policy))
        return bool(found) and found[0][1].get("numberOfInstances", 0) >= count

    return probe


def _held(name: str, tmpd: Path, var: Path, db_url: str, orthanc_http: int) -> int:
    """How many distinct instances a peer holds: files written (storescp, bare pynetdicom), or
    instances indexed (Orthanc's statistics, our node's index)."""
    if name == "storescp":
        return sum(1 for p in (tmpd / "ref").rglob("*") if p.is_file())
    if name == "bare pynetdicom":
        return sum(1 for p in (tmpd / "bare").iterdir() if p.is_file())
    if name == "Orthanc":
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{orthanc_http}/statistics", timeout=30) as r:
            return int(json.loads(r.read())["CountInstances"])
    from sqlalchemy import create_engine, func, select

    from dicom.tables import dicom_instance

    engine = create_engine(db_url or f"sqlite:///{var / 'fhirserver.sqlite3'}")
    try:
        with engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(dicom_instance)).scalar() or 0)
    finally:
        engine.dispose()


def _last_study_size(count: int) -> int:
    """How many of `count` instances made by `_make` are in its last study."""
    per_study = SERIES_PER_STUDY * INSTANCES_PER_SERIES
    return (count - 1) % per_study + 1


def _time_searchable(probe: Callable[[], bool], timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while not probe():
        if time.perf_counter() - t0 > timeout:
            return float("nan")
        time.sleep(0.005)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=int(os.environ.get("BENCH_DICOM_COUNT", "500")))
    ap.add_argument("--long", type=int, default=int(os.environ.get("BENCH_DICOM_LONG", "2000")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_DICOM_ROUNDS", "2")))
    ap.add_argument("--processes", type=int,
                    default=int(os.environ.get("BENCH_DICOM_PROCESSES", "0")) or os.cpu_count() or 1)
    ap.add_argument("--only", help="comma-separated peers (storescp,bare,orthanc,fhirserver)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        # fresh instances for every round (every peer gets the same files): no re-sends measured
        rounds = []
        for r in range(args.rounds):
            study_one, _ = _make(tmpd / f"one{r}", args.count, tag=f"R{r}")
            four = [tmpd / f"four{r}_{k}" for k in range(4)]
            four_studies = [_make(f, args.count // 4, tag=f"R{r}")[0] for f in four]
            rounds.append((tmpd / f"one{r}", study_one, four, four_studies[-1]))
        n_four = 4 * (args.count // 4)
        mb_each = sum(p.stat().st_size for p in (tmpd / "one0").iterdir()) / 1e6 / args.count
        _make(tmpd / "warm", 8)  # a few instances to every peer first: no cold start in the figures
        results: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        failed: list[str] = []

        peers = [
            Peer("storescp", "REF", lambda port: subprocess.Popen(
                ["storescp", "--fork", "-aet", "REF", "-od", str(tmpd / "ref"), str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)),
            Peer("bare pynetdicom", "BARE", lambda port: subprocess.Popen(
                [sys.executable, "-m", "bench.bare_scp", str(port), str(tmpd / "bare"), "BARE"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)),
        ]
        orthanc_http = _port()
        orthanc = _orthanc(tmpd, orthanc_http)
        if orthanc is None:
            notes.append("Orthanc: not installed (apt-get install -y orthanc), skipped")
        else:
            peers.append(Peer("Orthanc", "ORTHANC", orthanc))
        db_url = os.environ.get("BENCH_DICOM_DATABASE_URL", "")
        var = tmpd / "var"

        def start_ours(port: int) -> subprocess.Popen:
            env = dict(os.environ, FHIRSERVER_DATA_DIR=str(var))
            env.pop("FHIRSERVER_DATABASE_URL", None)
            if db_url:
                env["FHIRSERVER_DATABASE_URL"] = db_url
            return subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "dicom", "--accept-unknown",
                                     "--dicom-port", str(port), "--processes", str(args.processes)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=open(tmpd / "node.log", "wb"))

        peers.append(Peer("fhirserver", "FHIRSERVER", start_ours))
        (tmpd / "ref").mkdir()
        running: list[tuple[Peer, int, subprocess.Popen]] = []
        try:
            # every peer runs at once on its own port (idle while the others are measured); the
            # rounds take turns between them so that load from elsewhere hits all alike
            for peer in peers:
                if only and peer.name.split()[0].lower() not in only:
                    continue
                port = _port()
                proc = peer.start(port)
                try:
                    _wait_echo(port, peer.aec, proc)
                    _send(port, peer.aec, [tmpd / "warm"] * 4)
                except Exception as exc:  # noqa: BLE001 - only Orthanc is optional
                    _stop(proc)
                    if peer.name != "Orthanc":
                        raise RuntimeError(f"{peer.name} did not start: {exc!s:.300}") from exc
                    notes.append(f"{peer.name}: {exc!s:.300}; skipped")
                    continue
                running.append((peer, port, proc))
                results[peer.name] = {"t1": 0.0, "t4": 0.0, "searchable_1": [], "searchable_4": [], "sent": 8}
            for r, (one_dir, study_one, four, study_four) in enumerate(rounds):
                order = running[r % len(running):] + running[:r % len(running)] if running else []
                for phase in ("1", "4"):
                    for peer, port, proc in order:
                        row = results[peer.name]
                        try:
                            row["t" + phase] += _send(port, peer.aec, [one_dir] if phase == "1" else four)
                        except Exception as exc:  # noqa: BLE001
                            failed.append(f"{peer.name}: {exc!s:.300}")
                            row["failed"] = True
                            continue
                        row["sent"] += args.count if phase == "1" else n_four
                        if peer.name == "fhirserver":
                            probe = _searchable(db_url, var, study_one if phase == "1" else study_four,
                                                _last_study_size(args.count if phase == "1" else args.count // 4))
                            row["searchable_" + phase].append(_time_searchable(probe))
            for peer, port, proc in running:
                row = results[peer.name]
                row["1"] = args.count * args.rounds / row["t1"] if row["t1"] else float("nan")
                row["4"] = n_four * args.rounds / row["t4"] if row["t4"] else float("nan")
                if peer.name == "fhirserver":
                    row["searchable_1"] = max(row["searchable_1"] or [float("nan")])
                    row["searchable_4"] = max(row["searchable_4"] or [float("nan")])
                    # memory across a long run of distinct instances (fresh UIDs for every batch,
                    # nothing re-sent), in 4 associations, after everything above
                    rss0 = _tree_rss(proc.pid)
                    t, row["long_n"], batch = 0.0, 0, 0
                    while row["long_n"] < args.long:
                        folders = [tmpd / f"long{batch}_{k}" for k in range(4)]
                        for f in folders:
                            _make(f, max(1, args.count // 4), tag=f"L{batch}")
                        t += _send(port, peer.aec, folders)
                        row["long_n"] += 4 * max(1, args.count // 4)
                        for f in folders:
                            shutil.rmtree(f)
                        batch += 1
                    row["sent"] += row["long_n"]
                    row["long_ips"] = row["long_n"] / t
                    row["rss_growth_mb"] = (_tree_rss(proc.pid) - rss0) / 1e6
                    row["rss_mb"] = _tree_rss(proc.pid) / 1e6
            # every peer holds every distinct instance it was sent (Orthanc and our node: indexed)
            for peer, port, proc in running:
                held = _held(peer.name, tmpd, var, db_url, orthanc_http)
                results[peer.name]["held"] = held
                if held != results[peer.name]["sent"]:
                    failed.append(f"{peer.name}: holds {held} of the {results[peer.name]['sent']} "
                                  "distinct instances it acknowledged")
        finally:
            for _peer, _port_, proc in running:
                _stop(proc)
        results = {k: v for k, v in results.items() if not v.get("failed")}
    print(f"DICOM C-STORE, {args.count} CT instances of {mb_each:.2f} MB; 4 associations: "
          f"{n_four} instances; {args.rounds} rounds (peers take turns); our node: "
          f"{args.processes} receiving processes")
    print(f"  {'peer':18s} {'1 assoc/s':>10s} {'MB/s':>7s} {'4 assoc/s':>10s} {'MB/s':>7s}")
    for name, r in results.items():
        print(f"  {name:18s} {r['1']:10.1f} {r['1'] * mb_each:7.1f} {r['4']:10.1f} {r['4'] * mb_each:7.1f}")
    out: dict[str, Any] = {"count": args.count, "processes": args.processes,
                           "fsync": os.environ.get("FHIRSERVER_DICOM_FSYNC", "1") not in ("0", "false", "no", "off"),
                           "peers": {k: {"1": round(v["1"], 1), "4": round(v["4"], 1)} for k, v in results.items()}}
    ours = results.get("fhirserver")
    if ours:
        print(f"  ImagingStudy searchable after storescu returned (worst of the rounds): {ours['searchable_1'] * 1000:.0f} ms "
              f"(1 assoc), {ours['searchable_4'] * 1000:.0f} ms (4 assoc)")
        print(f"  long run: {ours['long_n']} instances at {ours['long_ips']:.1f}/s in 4 associations; "
              f"resident memory growth {ours['rss_growth_mb']:.1f} MB (now {ours['rss_mb']:.0f} MB)")
        out.update(searchable_ms=[round(ours["searchable_1"] * 1000, 1), round(ours["searchable_4"] * 1000, 1)],
                   rss_growth_mb=round(ours["rss_growth_mb"], 1), long_instances=ours["long_n"])
        bare, orth = results.get("bare pynetdicom"), results.get("Orthanc")
        if bare:
            out["one_vs_bare"] = round(ours["1"] / bare["1"], 2)
            print(f"  1 assoc vs bare pynetdicom: {out['one_vs_bare']:.2f} (target >= 0.8)")
        if orth:
            out["four_vs_orthanc"] = round(ours["4"] / orth["4"], 2)
            print(f"  4 assoc vs Orthanc: {out['four_vs_orthanc']:.2f} (target >= 1.0)")
    for note in notes:
        print("  note:", note)
    for f in failed:
        print("  FAILED:", f)
    out.update(failed=failed, load=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
