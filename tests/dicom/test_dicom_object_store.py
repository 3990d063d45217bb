"""The DICOM node and DICOMweb on an S3-compatible object store (a real moto server): dcmtk's
storescu stores into it, WADO-RS hands back the same bytes, C-GET reads from it; with the store
down a C-STORE gets 0xA700 and a STOW-RS part the same failure reason, nothing is indexed, and a
WADO-RS read is a 503 OperationOutcome (never a 500)."""
from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from conftest import Dcmtk
from dicom.tables import dicom_instance, dicom_study
from dicom.web import flush_audits
from dicom_helpers import start_node
from dicom_synth import make_ct, make_series
from fhirserver.blobs.s3 import S3BlobStore
from test_dicom_store import _dataset_bytes, _pynetdicom_send, count
from tests.conftest import free_port
from tests.dicomweb.dw_helpers import BOUNDARY, multipart
from tests.s3_server import MotoS3


def _parts(content_type: str, body: bytes) -> list[bytes]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    out = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        out.append(chunk.split(b"\r\n\r\n", 1)[1][:-2])
    return out


def test_storescu_into_the_object_store_and_wado_rs_back(settings, clean_dicom, tmp_path, s3_blob_url, make_app):  # noqa: ANN001
    node = start_node(settings, clean_dicom, tmp_path, blob_url=s3_blob_url)
    try:
        assert isinstance(node.store, S3BlobStore)
        folder = tmp_path / "in"
        _study, _series, files = make_series(folder, 3)
        Dcmtk(node).run("storescu", "+sd", "+r", files=[folder])
        with node.engine.connect() as c:
            rows = {r.sop_uid: r for r in c.execute(select(dicom_instance))}
        assert len(rows) == 3
        assert not (tmp_path / "var" / "dicom").exists()  # nothing went to the local folder
        app = make_app(settings.replace(blob_url=s3_blob_url))
        client = app.test_client()
        for path in files:
            sent = dcmread(path)
            row = rows[str(sent.SOPInstanceUID)]
            assert node.store.exists(row.storage_key)
            stored = b"".join(node.store.stream(row.storage_key))
            assert stored.endswith(_dataset_bytes(path))  # kept byte for byte as received
            url = (f"/dicomweb/studies/{row.study_uid}/series/{sent.SeriesInstanceUID}"
                   f"/instances/{sent.SOPInstanceUID}")
            r = client.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert r.status_code == 200 and r.data == stored
            r = client.get(f"/dicomweb/studies/{row.study_uid}", headers={"Accept": "multipart/related; "
                                                                     "type=\"application/dicom\""})
            assert r.status_code == 200 and stored in _parts(r.headers["Content-Type"], r.data)
        meta = client.get(f"/dicomweb/studies/{row.study_uid}/metadata")  # parsed from the object store
        assert meta.status_code == 200 and len(meta.json) == 3
        (tmp_path / "got").mkdir()
        proc = Dcmtk(node).run("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
                               "-k", f"StudyInstanceUID={row.study_uid}", "-od", str(tmp_path / "got"))
        assert len(list((tmp_path / "got").iterdir())) == 3, proc.stdout + proc.stderr
        flush_audits(app)
    finally:
        node.stop()


def test_object_store_down_fails_the_store_and_indexes_nothing(settings, clean_dicom, tmp_path, make_app):  # noqa: ANN001
    s3 = MotoS3(free_port()).start()
    blob_url = s3.bucket()
    node = start_node(settings, clean_dicom, tmp_path, blob_url=blob_url)
    app = make_app(settings.replace(blob_url=blob_url))
    client = app.test_client()
    try:
        kept = make_ct(tmp_path / "kept.dcm", number=1)
        assert _pynetdicom_send(node, kept).Status == 0
        with node.engine.connect() as c:
            row = c.execute(select(dicom_instance)).one()
        s3.stop()  # the object store goes away
        lost = make_ct(tmp_path / "lost.dcm", number=2)
        status = _pynetdicom_send(node, lost)
        assert status.Status == 0xA700  # out of resources: the sender keeps the image and retries
        assert count(node.engine, dicom_instance) == 1
        # STOW-RS: the part fails with the same reason, no row
        body = multipart([Path(tmp_path / "lost.dcm").read_bytes()])
        r = client.post("/dicomweb/studies", data=body,
                        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
        assert r.status_code == 409, r.data
        assert r.json["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        assert count(node.engine, dicom_instance) == 1
        # WADO-RS of an indexed instance whose bytes cannot be fetched now: 503, retry later
        r = client.get(f"/dicomweb/studies/{row.study_uid}/metadata")
        assert r.status_code == 503 and r.json["resourceType"] == "OperationOutcome"
        assert r.headers.get("Retry-After")
        r = client.get("/readyz")
        assert r.status_code == 503 and "blob_store" in [i["expression"][0] for i in r.json["issue"]]
        s3.start()  # back: the sender's retry succeeds, and is indexed once
        assert _pynetdicom_send(node, lost).Status == 0
        assert count(node.engine, dicom_instance) == 2
        with node.engine.connect() as c:
            assert c.execute(select(dicom_study.c.study_uid)).scalars().all()
        flush_audits(app)
    finally:
        node.stop()
        s3.stop()


def test_served_by_gunicorn_workers_on_the_object_store(database_url, clean_dicom, tmp_path, s3_blob_url,  # noqa: ANN001
                                                       monkeypatch):
    """`fhirserver serve` as operators run it (forked gunicorn workers): its start-up check of
    the store runs in a child interpreter, so the workers' object-store client is not a broken
    copy of the master's (a forked client hangs)."""
    import requests

    from tests.conftest import LiveServer
    from tests.dicomweb.dw_helpers import ct_bytes, uid_of

    monkeypatch.setenv("FHIRSERVER_BLOB_URL", s3_blob_url)
    (tmp_path / "live").mkdir()
    server = LiveServer(database_url, tmp_path / "live", start_seconds=300)  # a loaded CI machine
    try:
        data = ct_bytes(patient_id="S3-LIVE")
        r = requests.post(server.root + "/dicomweb/studies", data=multipart([data]), timeout=60, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
        assert r.status_code == 200, r.text
        retrieve = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        path = retrieve.split("/dicomweb", 1)[1]
        got = requests.get(server.root + "/dicomweb" + path, timeout=60,
                           headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert got.status_code == 200 and got.content == data and uid_of(got.content) == uid_of(data)
        assert not (tmp_path / "live" / "dicom" / "objects").exists()
    finally:
        server.stop()
