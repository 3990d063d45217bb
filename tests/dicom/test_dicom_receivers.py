"""The receiving path's fast parts: the store's hash-while-writing, and the node in several
processes sharing one port (`--processes`)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, need_dcmtk, wait_for
from dicom.transport import LoadBoard
from fhirserver.blobs import LocalBlobStore
from dicom_synth import make_series
from fhirserver.model.jsonio import loads


def test_store_hashes_while_writing(tmp_path):  # noqa: ANN001
    store = LocalBlobStore(tmp_path)
    big = os.urandom(600_000)
    head = b"\x00" * 128 + b"DICM"
    key, size = store.put((head, memoryview(big)))
    assert key == hashlib.sha256(head + big).hexdigest() and size == len(head) + len(big)
    assert store.open(key).read() == head + big
    assert store.put([head + big]) == (key, size)  # same bytes: same object, idempotent
    small_key, _ = store.put([b"abc"])
    assert small_key == hashlib.sha256(b"abc").hexdigest()
    assert not list(store.tmp.glob("*"))  # no temporary file left behind


def test_load_board_shares_counts(tmp_path):  # noqa: ANN001
    path = str(tmp_path / "board")
    LoadBoard.create(path, 2)
    a, b = LoadBoard(path, 0), LoadBoard(path, 1)
    a.opened()
    a.opened()
    assert (a.mine(), a.least(), b.least()) == (2, 0, 0)
    b.opened()
    assert a.least() == 1
    a.closed()
    a.closed()
    a.closed()  # never below zero
    assert (a.mine(), b.least()) == (0, 0)


def test_several_receiving_processes_one_imaging_study(settings, clean_dicom, tmp_path):  # noqa: ANN001
    """`fhirserver dicom --processes 2`: four associations at once, parts of one study, spread
    over both processes; every instance indexed, one ImagingStudy with all of them, searchable
    when the senders are done."""
    need_dcmtk()
    study_uid = None
    folders = []
    for k in range(4):
        study_uid, _series, _paths = make_series(tmp_path / f"in{k}", 5, study_uid=study_uid,
                                                 series_number=k + 1, patient_id="MP-1")
        folders.append(tmp_path / f"in{k}")
    port = free_port()
    data = tmp_path / "var"
    children: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhirserver.cli", "dicom", "--processes", "2", "--accept-unknown",
         "--dicom-port", str(port), "--host", "127.0.0.1", "--data-dir", str(data),
         "--database-url", settings.database_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            return subprocess.run(["echoscu", "-aec", "FHIRSERVER", "127.0.0.1", str(port)],
                                  capture_output=True).returncode == 0
        wait_for(up, timeout=60)
        children += subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2
        senders = [subprocess.Popen(["storescu", "-aet", "MOD", "-aec", "FHIRSERVER", "+sd", "127.0.0.1",
                                     str(port), str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=dict(os.environ, TCP_NODELAY="1")) for f in folders]
        for s in senders:
            assert s.wait(120) == 0, s.stderr.read().decode()[-2000:]
        # the ImagingStudy is updated before the A-RELEASE response: searchable right away
        with clean_dicom.transaction() as tx:
            rows, *_ = tx.search("ImagingStudy", [], count=100, with_total=False)
        studies = [loads(r.body) for r in rows]
        assert len(studies) == 1
        im = studies[0]
        assert f"urn:oid:{study_uid}" in [i["value"] for i in im["identifier"]]
        assert im["numberOfSeries"] == 4 and im["numberOfInstances"] == 20
        assert len(list((data / "dicom" / "objects").glob("*/*/*"))) == 20
    finally:
        proc.terminate()
        proc.wait(20)
    # stopped with the node (the supervisor reaps its receivers before it exits)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
