"""DICOM part of the bench: synthetic 512x512 16-bit CT instances sent by dcmtk storescu over one
association and over four at once, into our node (index + ImagingStudy included) and into
dcmtk's storescp writing to disk (reference), measured in the same run.

    .venv/bin/python -m bench.dicom [--count 500]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_echo(port: int, aec: str) -> None:
    for _ in range(200):
        if subprocess.run(["echoscu", "-aec", aec, "127.0.0.1", str(port)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("peer did not start")


def _make(folder: Path, count: int) -> list[Path]:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    pixels = np.random.default_rng(1).integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
    paths = []
    for n in range(count):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.PatientName, ds.PatientID = "Bench^Ct", "BENCH-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "CT", 1, n + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        p = folder / f"{n:05d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")  # dcmtk leaves Nagle on unless told


def _send(port: int, aec: str, folders: list[Path]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", aec, "+sd", "127.0.0.1", str(port), str(f)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
             for f in folders]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read().decode()[-500:])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        one = _make(tmpd / "one", args.count)
        four = [tmpd / f"four{k}" for k in range(4)]
        for k, f in enumerate(four):
            _make(f, args.count // 4)
        mb = sum(p.stat().st_size for p in one) / 1e6
        results = {}
        # reference: dcmtk storescp writing to disk
        port = _port()
        ref = subprocess.Popen(["storescp", "-aet", "REF", "-od", str(tmpd / "ref"), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        (tmpd / "ref").mkdir()
        try:
            _wait_echo(port, "REF")
            results["storescp 1 assoc"] = args.count / _send(port, "REF", [tmpd / "one"])
            results["storescp 4 assoc"] = args.count / _send(port, "REF", four)
        finally:
            ref.terminate()
        # our node, on its own SQLite database and data folder
        port = _port()
        env = dict(os.environ, FHIRSERVER_DATA_DIR=str(tmpd / "var"))
        env.pop("FHIRSERVER_DATABASE_URL", None)
        node = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "dicom", "--accept-unknown",
                                 "--dicom-port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_echo(port, "FHIRSERVER")
            results["fhirserver 1 assoc"] = args.count / _send(port, "FHIRSERVER", [tmpd / "one"])
            results["fhirserver 4 assoc"] = args.count / _send(port, "FHIRSERVER", four)
        finally:
            node.terminate()
            node.wait(10)
    print(f"DICOM C-STORE, {args.count} CT instances of {mb / args.count:.2f} MB "
          "(ImagingStudy searchable when storescu returns: indexed before A-RELEASE-RP)")
    for name, ips in results.items():
        print(f"  {name:22s} {ips:8.1f} instances/s {ips * mb / args.count:8.1f} MB/s")
    print(f"  ratio fhirserver/storescp: 1 assoc {results['fhirserver 1 assoc'] / results['storescp 1 assoc']:.2f}, "
          f"4 assoc {results['fhirserver 4 assoc'] / results['storescp 4 assoc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
