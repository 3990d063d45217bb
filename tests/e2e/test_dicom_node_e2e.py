"""The issue's "done when", end to end with real processes: `fhirserver serve` with its DICOM
node, a modality registered with `fhirserver dicom-node add`, dcmtk's storescu/findscu/movescu
and a FHIR search for the ImagingStudy on the Patient."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import delete

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ct(path: Path, study: str, series: str, n: int) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientSex = "Tooth^Tina", "E2E-PAT-1", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = \
        "20240202", "090000", "CT", 1, n
    ds.AccessionNumber = "E2E-ACC"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(16 * 16 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _run(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_new_user_flow(session_app, database_url, tmp_path):  # noqa: ANN001
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed (make test installs it)")
    from dicom.tables import DICOM_TABLES

    with session_app.extensions["fhirserver"].repo.engine.begin() as conn:
        for t in reversed(DICOM_TABLES):
            conn.execute(delete(t))
    http, dport, dest_port = _port(), _port(), _port()
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=database_url, FHIRSERVER_DATA_DIR=str(tmp_path / "var"))
    cli = [sys.executable, "-m", "fhirserver.cli"]
    _run(*cli, "dicom-node", "add", "--ae", "SCANNER", "--host", "127.0.0.1", "--port", "104",
         "--organization", "clinic-1", env=env)
    _run(*cli, "dicom-node", "add", "--ae", "VIEWER", "--host", "127.0.0.1", "--port", str(dest_port),
         env=env)
    server = subprocess.Popen([*cli, "serve", "--insecure-no-auth", "--port", str(http), "--workers", "1",
                               "--dicom-port", str(dport), "--dicom-ae", "FHIRSERVER"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))
    base = f"http://127.0.0.1:{http}/fhir"
    viewer = None
    try:
        deadline = time.time() + 60
        while True:
            echo = subprocess.run(["echoscu", "-aet", "SCANNER", "-aec", "FHIRSERVER", "127.0.0.1", str(dport)],
                                  capture_output=True)
            try:
                up = requests.get(base + "/metadata", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or still starting its workers
                up = False
            if echo.returncode == 0 and up:
                break
            assert time.time() < deadline, "server or DICOM node did not start"
            time.sleep(0.3)
        # an unknown modality is turned away
        assert subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "FHIRSERVER", "127.0.0.1", str(dport)],
                              capture_output=True).returncode != 0
        # a scan ticket (ServiceRequest) shows on the worklist
        requests.put(base + "/Organization/clinic-1", json={"resourceType": "Organization", "id": "clinic-1",
                                                             "name": "Clinic One"}).raise_for_status()
        patient = requests.post(base + "/Patient", json={   # a patient of the scanner's clinic
            "resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "E2E-PAT-1"}],
            "name": [{"family": "Tooth", "given": ["Tina"]}],
            "managingOrganization": {"reference": "Organization/clinic-1"}}).json()
        sr = requests.post(base + "/ServiceRequest", json={
            "subject": {"reference": f"Patient/{patient['id']}"},
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"value": "E2E-ACC"}], "code": {"text": "CBCT"}}).json()
        wl = tmp_path / "wl"
        wl.mkdir()
        _run("findscu", "-W", "-aet", "SCANNER", "-aec", "FHIRSERVER", "-X", "-od", str(wl),
             "-k", "AccessionNumber", "-k", "RequestedProcedureDescription", "127.0.0.1", str(dport))
        items = [dcmread(p) for p in wl.glob("rsp*.dcm")]
        assert any(i.AccessionNumber == "E2E-ACC" for i in items), (sr, items)
        # send a folder of scans
        folder = tmp_path / "scans"
        folder.mkdir()
        study, series = generate_uid(), generate_uid()
        for n in range(1, 6):
            _ct(folder / f"{n}.dcm", study, series, n)
        _run("storescu", "-aet", "SCANNER", "-aec", "FHIRSERVER", "+sd", "127.0.0.1", str(dport), str(folder))
        # find it with findscu
        out = tmp_path / "found"
        out.mkdir()
        _run("findscu", "-S", "-aet", "SCANNER", "-aec", "FHIRSERVER", "-X", "-od", str(out),
             "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=E2E-PAT-1", "-k", "StudyInstanceUID",
             "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(dport))
        found = [dcmread(p) for p in out.glob("rsp*.dcm")]
        assert [f.StudyInstanceUID for f in found] == [study]
        assert found[0].NumberOfStudyRelatedInstances == 5
        # ... and as an ImagingStudy on the Patient over FHIR
        pats = requests.get(base + "/Patient", params={"identifier": "E2E-PAT-1"}).json()
        assert [e["resource"]["id"] for e in pats["entry"]] == [patient["id"]]  # matched, not duplicated
        pid = patient["id"]
        from dicom.tables import dicom_study

        with session_app.extensions["fhirserver"].repo.engine.connect() as conn:
            im_id = conn.execute(dicom_study.select().where(dicom_study.c.study_uid == study)).one().imaging_study_id
        im = requests.get(f"{base}/ImagingStudy/{im_id}").json()
        bundle = requests.get(base + "/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"}).json()
        assert [e["resource"]["id"] for e in bundle["entry"]] == [im_id]
        assert im["subject"]["reference"] == f"Patient/{pid}"
        assert im["numberOfInstances"] == 5
        assert im["basedOn"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
        by_patient = requests.get(base + "/ImagingStudy", params={"patient": pid})
        assert by_patient.status_code == 200
        assert [e["resource"]["id"] for e in by_patient.json().get("entry", [])] == [im["id"]]
        # pull it back with movescu into a viewer (storescp)
        got = tmp_path / "viewer"
        got.mkdir()
        viewer = subprocess.Popen(["storescp", "-aet", "VIEWER", "-od", str(got), str(dest_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        _run("movescu", "-S", "-aet", "SCANNER", "-aec", "FHIRSERVER", "-aem", "VIEWER",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(dport))
        assert len(list(got.iterdir())) == 5
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(10)
        server.terminate()
        server.wait(30)
    # the node stopped with the server
    time.sleep(0.5)
    assert subprocess.run(["echoscu", "-aet", "SCANNER", "-aec", "FHIRSERVER", "127.0.0.1", str(dport)],
                          capture_output=True).returncode != 0
