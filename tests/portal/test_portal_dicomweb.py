"""The viewer's reads through the portal session (`/portal/dicomweb/...`): a patient reads her own
study's series, metadata, frames and a WADO-URI download; another patient and the staff of another
organization get nothing of it; writes and study-less searches are not proxied. `/viewer/` hands
out only static files, with a strict CSP."""
from __future__ import annotations

import io
import uuid
from pathlib import Path

from pydicom import dcmread

from portal_helpers import admin_token, login
from smart_auth import store
from viewer import built

CT = Path(__file__).parents[1] / "data" / "dicom" / "eCT_Supplemental.dcm"


def _stow(app, tok: str, patient_id: str) -> tuple[str, str, str]:  # noqa: ANN001
    from pydicom.uid import generate_uid

    ds = dcmread(CT)
    ds.PatientID = patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    b = uuid.uuid4().hex
    body = f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue() + f"\r\n--{b}--\r\n".encode()
    r = app.test_client().post("/dicomweb/studies", data=body, headers={
        "Authorization": f"Bearer {tok}", "Content-Type": f'multipart/related; type="application/dicom"; boundary={b}'})
    assert r.status_code == 200, r.text[:500]
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _mrn(app, tok: str, pid: str, mrn: str) -> None:  # noqa: ANN001
    c = app.test_client()
    h = {"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"}
    p = c.get(f"/fhir/Patient/{pid}", headers=h).get_json()
    p["identifier"] = [{"system": "urn:demo:mrn", "value": mrn}]
    assert c.put(f"/fhir/Patient/{pid}", json=p, headers=h).status_code == 200


def test_portal_dicomweb_reads_only_the_callers_studies(papp):  # noqa: ANN001
    tok = admin_token(papp)
    _mrn(papp, tok, "demo-ana", "MRN-ANA-DW")
    study, series, sop = _stow(papp, tok, "MRN-ANA-DW")
    base = f"/portal/dicomweb/studies/{study}"
    reads = (f"{base}/series", f"{base}/metadata", f"{base}/series/{series}/metadata",
             f"{base}/series/{series}/instances", f"{base}/series/{series}/instances/{sop}/frames/1,2",
             f"/portal/dicomweb/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
             "&contentType=application/dicom")
    ana = login(papp)
    for url in reads:  # her own study: every read the viewer makes answers
        r = ana.get(url, headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
                    if "/frames/" in url else {})
        assert r.status_code == 200, (url, r.status_code, r.data[:300])
    assert ana.get(f"{base}/series").get_json()[0]["0020000E"]["Value"] == [series]

    bob = login(papp, "bob@example.org")
    eng = papp.extensions["fhirserver"].repo.engine
    store.add_user(eng, username="staff@harbor.example", password="harbor-pass-1", role="staff",
                   fhir_user=None, organizations=["demo-other"])
    other_staff = login(papp, "staff@harbor.example", "harbor-pass-1")
    for who in (bob, other_staff):
        for url in reads:
            r = who.get(url)
            assert r.status_code == 404 or (r.status_code in (200, 204) and not (r.data and r.get_json())), \
                (url, r.status_code)
    # not proxied: storing, and searches across studies
    assert ana.post("/portal/dicomweb/studies", data=b"x").status_code in (404, 405)
    assert ana.get("/portal/dicomweb/studies").status_code == 404
    assert ana.get("/portal/dicomweb/instances").status_code == 404
    # signed out: to the sign-in page, never the data
    assert papp.test_client().get(f"{base}/series").status_code == 303


def test_viewer_route_serves_static_files_only(papp):  # noqa: ANN001
    c = papp.test_client()
    r = c.get("/viewer?study=1.2.3")
    assert r.status_code == 308 and r.headers["Location"].endswith("/viewer/?study=1.2.3")
    r = c.get("/viewer/?study=1.2.3")
    if built():
        assert r.status_code == 200 and b'id="viewport"' in r.data
        csp = r.headers["Content-Security-Policy"]
        assert "connect-src 'self'" in csp and "default-src 'self'" in csp
        assert r.headers["Cache-Control"] == "no-store"
    else:
        assert r.status_code == 503 and b"make viewer" in r.data
    assert c.get("/viewer/assets/../../__init__.py").status_code == 404
