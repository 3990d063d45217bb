"""Acknowledged means durable and findable: what C-STORE answers success for is indexed and in
its ImagingStudy, even across kill -9 of the node; incomplete pixel data gets a warning and a
flag; a store that cannot write or index answers a failure status; `serve` restarts its node."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid
from sqlalchemy import select, text

from conftest import SCU_AE, free_port, need_dcmtk, wait_for
from dicom.bridge import INCOMPLETE_URL
from dicom.index import record_erased
from dicom.nodes import add_node
from dicom.encoding import meta_header
from dicom.scp import DicomNode
from dicom.tables import dicom_bridge_work, dicom_instance
from dicom_synth import make_ct, make_series
from dicom.fhir import has_identifier, search
from fhirserver.access import SystemJob
from test_dicom_store import _dataset_bytes, _pynetdicom_send


def _instance_rows(engine) -> dict[str, object]:  # noqa: ANN001
    with engine.connect() as c:
        return {r.sop_uid: r for r in c.execute(select(dicom_instance))}


def _imaging_study(repo, study_uid: str) -> dict | None:  # noqa: ANN001
    value = f"urn:oid:{study_uid}"
    with repo.transaction() as tx:
        found = list(search(tx, "ImagingStudy", [("identifier", f"urn:dicom:uid|{value}")],
                            lambda b: has_identifier(b, value, "urn:dicom:uid"), limit=10,
                            policy=SystemJob("test check")))
    assert len(found) <= 1
    return found[0][1] if found else None


def _instances_in_studies(repo, study_uids) -> set[str]:  # noqa: ANN001
    out: set[str] = set()
    for uid in study_uids:
        body = _imaging_study(repo, uid) or {}
        out |= {i["uid"] for s in body.get("series", []) for i in s.get("instance", [])}
    return out


def _node_process(settings, port: int, data: Path, log: Path, *extra: str) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        [sys.executable, "-m", "fhirserver.cli", "dicom", "--processes", "1", "--accept-unknown",
         "--dicom-port", str(port), "--host", "127.0.0.1", "--data-dir", str(data),
         "--database-url", settings.database_url, *extra],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def _echo(port: int) -> bool:
    return subprocess.run(["echoscu", "-aec", "FHIRSERVER", "127.0.0.1", str(port)],
                          capture_output=True).returncode == 0


def acknowledged(log: str) -> set[str]:
    """SOP Instance UIDs storescu (-v) reported stored: a Success or Warning response."""
    out, current = set(), None
    for line in log.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response" in line and current:
            if "(Success" in line or "(Warning" in line:
                out.add(current)
            current = None
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out}


N = 50  # instances per association


@pytest.mark.slow
def test_kill9_during_four_associations_loses_nothing_acknowledged(settings, clean_dicom, tmp_path):  # noqa: ANN001
    """kill -9 of the node while 4 storescu associations send 4 x N instances: every instance
    any storescu was told is stored has its index row at once, and after the restart it is in
    its study's ImagingStudy; stray temporary files are gone and no stored file lacks a row."""
    need_dcmtk()
    folders, studies = [], []
    for k in range(4):
        study_uid, _series, paths = make_series(tmp_path / f"in{k}", N, patient_id=f"K9-{k}")
        folders.append(paths)
        studies.append(study_uid)
    port, data, log = free_port(), tmp_path / "var", tmp_path / "node.log"
    node = _node_process(settings, port, data, log)
    senders: list[subprocess.Popen] = []
    try:
        wait_for(lambda: node.poll() is None and _echo(port), timeout=60)
        logs = [tmp_path / f"scu{k}.log" for k in range(4)]
        senders = [subprocess.Popen(["storescu", "-v", "-aet", "MOD", "-aec", "FHIRSERVER", "127.0.0.1",
                                     str(port), *map(str, paths)], stdout=open(lg, "wb"),
                                    stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
                   for paths, lg in zip(folders, logs)]
        wait_for(lambda: len(_instance_rows(clean_dicom.engine)) >= 40, timeout=40)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        for s in senders:
            s.wait(60)
        acked = set().union(*(acknowledged(lg.read_text()) for lg in logs))
        # rows are committed before their success goes out, so a kill between a group commit and
        # its replies leaves indexed instances no modality was told of: fewer acks than rows
        assert 10 <= len(acked) < 4 * N  # killed in the middle
        rows = _instance_rows(clean_dicom.engine)
        assert acked <= set(rows), f"{len(acked - set(rows))} acknowledged instances not indexed"

        # a crash in the middle of a write leaves a temporary file of a process that is gone
        (data / "dicom" / "tmp" / f"{node.pid}-1-99.part").write_bytes(b"partial")
        node = _node_process(settings, port, data, log)
        wait_for(lambda: node.poll() is None and _echo(port), timeout=60)
        wait_for(lambda: acked <= _instances_in_studies(clean_dicom, studies), timeout=30)
        assert not list((data / "dicom" / "tmp").iterdir())
        keys = {r.storage_key for r in _instance_rows(clean_dicom.engine).values()}
        assert {p.name for p in (data / "dicom" / "objects").glob("*/*/*")} <= keys
        with clean_dicom.engine.connect() as c:
            assert c.execute(select(dicom_bridge_work)).all() == []
        # the modality sends everything again: all of them, once each, in their ImagingStudies
        resend = [subprocess.Popen(["storescu", "-aet", "MOD", "-aec", "FHIRSERVER", "127.0.0.1", str(port),
                                    *map(str, paths)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                  for paths in folders]
        for p in resend:
            assert p.wait(60) == 0, p.stderr.read()[-1000:] + log.read_text()[-3000:]
        assert len(_instance_rows(clean_dicom.engine)) == 4 * N
        for uid in studies:
            assert (_imaging_study(clean_dicom, uid) or {}).get("numberOfInstances") == N
    finally:
        for s in senders:
            if s.poll() is None:
                s.kill()
        node.kill()
        node.wait(10)


def test_incomplete_pixel_data_is_kept_with_a_warning_and_flagged(node, tmp_path):  # noqa: ANN001
    whole = make_ct(tmp_path / "whole.dcm", number=1)
    study_uid = str(dcmread(whole).StudyInstanceUID)
    assert _pynetdicom_send(node, whole).Status == 0x0000  # a whole image: plain success

    cut = dcmread(whole)
    cut.SOPInstanceUID, cut.InstanceNumber = generate_uid(), 2
    cut.file_meta.MediaStorageSOPInstanceUID = cut.SOPInstanceUID
    cut.PixelData = cut.PixelData[:1000]  # 1,000 of 8,192 bytes
    cut.save_as(tmp_path / "cut.dcm")
    gone = dcmread(whole)
    gone.SOPInstanceUID, gone.InstanceNumber = generate_uid(), 3
    gone.file_meta.MediaStorageSOPInstanceUID = gone.SOPInstanceUID
    del gone.PixelData
    gone.save_as(tmp_path / "gone.dcm")
    empty = make_ct(tmp_path / "rle.dcm", number=4, study_uid=study_uid)  # compressed, no fragment
    rle = dcmread(empty)
    rle.compress(RLELossless)
    rle.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    rle.save_as(empty)

    short = make_ct(tmp_path / "short.dcm", number=5, study_uid=study_uid,
                    series_uid=str(dcmread(whole).SeriesInstanceUID))
    short.write_bytes(short.read_bytes()[:-7000])  # the file ends inside its pixel data element

    for path, why in ((tmp_path / "cut.dcm", "pixel data 1000 of 8192 bytes"),
                      (short, "pixel data 1192 of 8192 bytes"),
                      (tmp_path / "gone.dcm", "pixel data missing"),
                      (empty, "encapsulated pixel data without any fragment")):
        status = _pynetdicom_send(node, path)
        assert status.Status == 0xB007, path
        assert why in str(status.get("ErrorComment", ""))
        sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        row = _instance_rows(node.engine)[sop]
        assert row.incomplete == why
        with node.store.open(row.storage_key) as f:  # kept byte for byte as received
            assert f.read().endswith(_dataset_bytes(path))
    assert _instance_rows(node.engine)[str(dcmread(whole).SOPInstanceUID)].incomplete is None

    body = _imaging_study(node.repo, study_uid)
    items = {i["uid"]: i for s in body["series"] for i in s["instance"]}
    assert len(items) == 5
    flagged = {u: i for u, i in items.items() if "extension" in i}
    assert set(flagged) == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                            for p in (tmp_path / "cut.dcm", short, tmp_path / "gone.dcm", empty)}
    cut_item = flagged[str(cut.SOPInstanceUID)]
    assert cut_item["extension"] == [{"url": INCOMPLETE_URL, "valueString": "pixel data 1000 of 8192 bytes"}]
    assert cut_item["title"].startswith("INCOMPLETE")
    # storescu sees the warning too (and still counts the instance as sent)
    proc = node_scu(node, tmp_path / "cut.dcm")
    assert "Warning" in proc.stdout + proc.stderr


def node_scu(node, path: Path) -> subprocess.CompletedProcess:  # noqa: ANN001
    need_dcmtk()
    return subprocess.run(["storescu", "-v", "-aet", SCU_AE, "-aec", "FHIRSERVER", "127.0.0.1",
                           str(node.settings.dicom_port), str(path)], capture_output=True, text=True, timeout=60)


def test_unwritable_store_answers_failure_and_acknowledges_nothing(node, tmp_path):  # noqa: ANN001
    first = make_ct(tmp_path / "a.dcm", number=1)
    assert _pynetdicom_send(node, first).Status == 0x0000
    tmp = node.store.tmp
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    tmp.write_bytes(b"")  # the temporary folder is no folder: every write fails (root ignores modes)
    try:
        second = make_ct(tmp_path / "b.dcm", number=2)
        assert _pynetdicom_send(node, second).Status == 0xA700
        assert set(_instance_rows(node.engine)) == {str(dcmread(first).SOPInstanceUID)}
    finally:
        tmp.unlink()
        tmp.mkdir()


def test_index_that_cannot_be_written_answers_failure(node, tmp_path):  # noqa: ANN001
    first = make_ct(tmp_path / "a.dcm", number=1)
    assert _pynetdicom_send(node, first).Status == 0x0000
    with node.engine.begin() as c:
        c.execute(text("ALTER TABLE dicom_instance RENAME TO dicom_instance_away"))
    try:
        assert _pynetdicom_send(node, make_ct(tmp_path / "b.dcm", number=2)).Status == 0xA700
    finally:
        with node.engine.begin() as c:
            c.execute(text("ALTER TABLE dicom_instance_away RENAME TO dicom_instance"))
    assert set(_instance_rows(node.engine)) == {str(dcmread(first).SOPInstanceUID)}
    third = make_ct(tmp_path / "c.dcm", number=3)  # the database is back: stores succeed again
    assert _pynetdicom_send(node, third).Status == 0x0000


@pytest.mark.slow
def test_full_disk_answers_failure(settings, clean_dicom, tmp_path):  # noqa: ANN001
    """A node that can write no file larger than 100 kB (as on a full disk) answers 0xA700 to
    512x512 instances and indexes none of them; storescu reports the failures."""
    need_dcmtk()
    import resource

    _study, _series, paths = make_series(tmp_path / "in", 5, size=512)
    port, data = free_port(), tmp_path / "var"
    (data / "dicom" / "tmp").mkdir(parents=True)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    node = subprocess.Popen(
        [sys.executable, "-m", "fhirserver.cli", "dicom", "--processes", "1", "--accept-unknown",
         "--dicom-port", str(port), "--host", "127.0.0.1", "--data-dir", str(data),
         "--database-url", settings.database_url],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "node.log", "wb"), preexec_fn=limit)
    try:
        wait_for(lambda: node.poll() is None and _echo(port), timeout=60)
        proc = subprocess.run(["storescu", "-v", "--no-halt", "-aet", "MOD", "-aec", "FHIRSERVER", "127.0.0.1",
                               str(port), *map(str, paths)], capture_output=True, text=True, timeout=60)
        assert acknowledged(proc.stdout + proc.stderr) == set()
        assert (proc.stdout + proc.stderr).count("Received Store Response (Refused: OutOfResources)") == 5
        assert _instance_rows(clean_dicom.engine) == {}
        assert not list((data / "dicom" / "tmp").iterdir())
    finally:
        node.kill()
        node.wait(10)


def test_recovery_indexes_orphan_files_and_removes_stray_temps(node, tmp_path):  # noqa: ANN001
    """What a crash between the file write and the index commit leaves is found at start."""
    path = make_ct(tmp_path / "orphan.dcm", number=1, patient_id="ORPH-1")
    ds = dcmread(path, stop_before_pixels=True)
    header = meta_header(str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1", "MODX")
    key, _size = node.store.put([header, _dataset_bytes(path)])
    (node.store.tmp / "999999999-1-1.part").write_bytes(b"half a file")
    # an erasure that committed but died before deleting its file: the file goes, never indexed
    erased = make_ct(tmp_path / "erased.dcm", number=2, patient_id="ERASED-1")
    eds = dcmread(erased, stop_before_pixels=True)
    erased_key, _ = node.store.put([meta_header(str(eds.SOPClassUID), str(eds.SOPInstanceUID),
                                                "1.2.840.10008.1.2.1", "MODX"), _dataset_bytes(erased)])
    with node.engine.begin() as c:
        record_erased(c, [erased_key])
    assert _instance_rows(node.engine) == {}

    again = DicomNode(node.settings, repo=node.repo, store=node.store)
    again.recover()
    rows = _instance_rows(node.engine)
    assert rows[str(ds.SOPInstanceUID)].storage_key == key
    assert rows[str(ds.SOPInstanceUID)].source_ae == "MODX"
    assert not list(node.store.tmp.glob("*"))  # made at the first write
    body = _imaging_study(node.repo, str(ds.StudyInstanceUID))
    assert body["numberOfInstances"] == 1
    assert not node.store.exists(erased_key) and str(eds.SOPInstanceUID) not in rows
    assert _imaging_study(node.repo, str(eds.StudyInstanceUID)) is None


@pytest.mark.slow
def test_serve_restarts_its_dicom_node(settings, clean_dicom, tmp_path):  # noqa: ANN001
    need_dcmtk()
    add_node(clean_dicom.engine, SCU_AE, "127.0.0.1", 104)
    port, dport, data = free_port(), free_port(), tmp_path / "var"
    data.mkdir()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "fhirserver.cli", "serve", "--insecure-no-auth", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--dicom-port", str(dport), "--data-dir", str(data),
         "--database-url", settings.database_url],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
        env=dict(os.environ, FHIRSERVER_DICOM_PROCESSES="1"))

    def echo() -> bool:
        assert serve.poll() is None, log.read_text()[-2000:]
        return subprocess.run(["echoscu", "-aet", SCU_AE, "-aec", "FHIRSERVER", "127.0.0.1", str(dport)],
                              capture_output=True).returncode == 0

    def node_pid() -> int | None:
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(serve.pid)], capture_output=True,
                             text=True).stdout
        pids = [int(line.split()[0]) for line in out.splitlines() if " dicom " in line]
        return pids[0] if pids else None

    second = None
    try:
        wait_for(echo, timeout=60)
        first = node_pid()
        assert first
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (node_pid() or first) != first and node_pid(), timeout=20)
        wait_for(echo, timeout=60)
        assert "starting it again" in log.read_text()
        assert "DICOM node started again" in log.read_text()
    finally:
        serve.terminate()
        serve.wait(30)
    time.sleep(1.5)
    assert second and not Path(f"/proc/{second}").exists()  # stopped with the server


@pytest.mark.slow
def test_kill9_right_after_storescu_success_all_indexed_and_retrievable(settings, clean_dicom, tmp_path):  # noqa: ANN001
    """storescu sends N instances of 3 studies over one association; the node is killed -9 the
    moment storescu has been told the Nth one is stored (before it releases the association:
    no bridge run, no clean shutdown). After the restart all N have their index row, their
    bytes come back from the store exactly as sent, and they are in their ImagingStudies."""
    need_dcmtk()
    paths, studies = [], []
    for k in range(3):
        study_uid, _series, ps = make_series(tmp_path / f"in{k}", 8, patient_id=f"ACK-{k}")
        paths += ps
        studies.append(study_uid)
    n = len(paths)
    port, data, log = free_port(), tmp_path / "var", tmp_path / "node.log"
    node = _node_process(settings, port, data, log)
    scu_log = tmp_path / "scu.log"
    sender = None
    try:
        wait_for(lambda: node.poll() is None and _echo(port), timeout=60)
        sender = subprocess.Popen(["storescu", "-v", "-aet", "MOD", "-aec", "FHIRSERVER", "127.0.0.1", str(port),
                                   *map(str, paths)], stdout=open(scu_log, "wb"), stderr=subprocess.STDOUT,
                                  env=dict(os.environ, TCP_NODELAY="1"))
        # poll storescu's log as fast as it writes it: the kill follows the Nth success by ms
        deadline = time.monotonic() + 60
        while scu_log.read_text().count("Received Store Response (Success") < n:
            assert time.monotonic() < deadline, scu_log.read_text()[-2000:]
            assert sender.poll() is None or scu_log.read_text().count("(Success") >= n, scu_log.read_text()
            time.sleep(0.002)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        sender.wait(30)
        acked = acknowledged(scu_log.read_text())
        assert len(acked) == n
        sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}
        assert acked == set(sent)

        node = _node_process(settings, port, data, log)
        wait_for(lambda: node.poll() is None and _echo(port), timeout=60)
        rows = _instance_rows(clean_dicom.engine)
        assert set(sent) <= set(rows)
        from fhirserver.blobs import LocalBlobStore

        store = LocalBlobStore(Path(data) / "dicom")
        for sop, path in sent.items():
            with store.open(rows[sop].storage_key) as f:
                assert f.read().endswith(_dataset_bytes(path)), sop
        wait_for(lambda: set(sent) <= _instances_in_studies(clean_dicom, studies), timeout=30)
        # retrievable through the node too: C-GET of one study brings back all its instances
        out = tmp_path / "got"
        out.mkdir()
        got = subprocess.run(["getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                              f"StudyInstanceUID={studies[0]}", "-od", str(out), "-aet", "MOD", "-aec",
                              "FHIRSERVER", "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr[-2000:]
        assert len(list(out.iterdir())) == 8, got.stderr[-2000:]
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        node.kill()
        node.wait(10)


def test_store_answers_failure_and_indexes_nothing_when_the_file_cannot_reach_the_disk(node, tmp_path,
                                                                                       monkeypatch):  # noqa: ANN001
    """The instance's file is flushed to disk before its row is written and success is sent: a
    flush that fails is an Out of Resources answer and no row (the sender keeps the image)."""
    import dicom.handlers as handlers

    flushed: list[str] = []

    def failing(store, key):  # noqa: ANN001, ANN202
        flushed.append(key)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(handlers, "make_durable", failing)
    path = make_ct(tmp_path / "one.dcm", number=1)
    assert _pynetdicom_send(node, path).Status == 0xA700
    assert len(flushed) == 1
    assert _instance_rows(node.engine) == {}

    monkeypatch.undo()
    calls: list[str] = []
    real = handlers.make_durable

    def counting(store, key):  # noqa: ANN001, ANN202
        calls.append(key)
        assert _instance_rows(node.engine) == {}  # flushed before the row exists
        real(store, key)

    monkeypatch.setattr(handlers, "make_durable", counting)
    assert _pynetdicom_send(node, path).Status == 0x0000
    assert len(calls) == 1 and set(_instance_rows(node.engine)) == {str(dcmread(path).SOPInstanceUID)}
