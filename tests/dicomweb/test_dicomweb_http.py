"""DICOMweb over raw HTTP (Flask test client): STOW, QIDO, WADO, rendered, WADO-URI, errors."""
from __future__ import annotations

import json
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom.web import flush_audits
from dw_helpers import STOW_TYPE, ct_bytes, multipart, split_multipart, uid_of, value

DW = "/dicomweb"


def stow(client, parts, url=f"{DW}/studies", ctype=STOW_TYPE):  # noqa: ANN001, ANN201
    return client.post(url, data=multipart(parts), headers={"Content-Type": ctype})


def _study(n=3, **kw):  # noqa: ANN001, ANN202
    study, series = generate_uid(), generate_uid()
    return study, series, [ct_bytes(study_uid=study, series_uid=series, number=i + 1, **kw) for i in range(n)]


def test_stow_then_qido_wado_metadata_frames(dw, repo):
    study, series, parts = _study(3, patient_id="PX1", patient_name="Doe^Jane", accession="ACC1",
                                  window=(40, 400))
    other, _s2, other_parts = _study(1, patient_id="PX2", patient_name="Roe^Rick", study_date="20230301")
    r = stow(dw, parts + other_parts)
    assert r.status_code == 200, r.data
    assert r.headers["Content-Type"] == "application/dicom+json"
    body = r.get_json()
    refs = body["00081199"]["Value"]
    assert len(refs) == 4 and "00081198" not in body
    assert value(refs[0], "00081190").startswith("http://testserver/dicomweb/studies/")
    # stored like C-STORE: the ImagingStudy and its Endpoint at <base>/dicomweb
    found = dw.get(f"/fhir/ImagingStudy?identifier=urn:oid:{study}").get_json()
    assert found["total"] == 1
    ims = found["entry"][0]["resource"]
    assert ims["numberOfInstances"] == 3 and ims["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    ep = dw.get("/fhir/Endpoint/dicomweb").get_json()
    assert ep["address"] == "http://testserver/dicomweb"
    # storing the same instance again is fine (idempotent)
    assert stow(dw, parts[:1], url=f"{DW}/studies/{study}").status_code == 200

    # QIDO
    r = dw.get(f"{DW}/studies")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/dicom+json"
    studies = r.get_json()
    assert {value(s, "0020000D") for s in studies} == {study, other}
    mine = next(s for s in studies if value(s, "0020000D") == study)
    assert value(mine, "00201208") == 3 and value(mine, "00080061") == "CT"
    assert value(mine, "00081190") == f"http://testserver/dicomweb/studies/{study}"
    assert [value(s, "0020000D") for s in dw.get(f"{DW}/studies?PatientName=doe*").get_json()] == [study]
    assert [value(s, "0020000D") for s in dw.get(f"{DW}/studies?00100020=PX2").get_json()] == [other]
    assert [value(s, "0020000D") for s in dw.get(f"{DW}/studies?StudyDate=20240101-20241231").get_json()] == [study]
    assert [value(s, "0020000D") for s in dw.get(f"{DW}/studies?AccessionNumber=ACC1").get_json()] == [study]
    assert [value(s, "0020000D") for s in dw.get(f"{DW}/studies?PatientName=jan&fuzzymatching=true").get_json()] \
        == [study]
    assert dw.get(f"{DW}/studies?StudyInstanceUID={study},{other}").get_json().__len__() == 2
    page = dw.get(f"{DW}/studies?limit=1")
    assert len(page.get_json()) == 1 and "additional results" in page.headers["Warning"]
    assert len(dw.get(f"{DW}/studies?limit=1&offset=1").get_json()) == 1
    assert dw.get(f"{DW}/studies?offset=5").get_json() == []
    assert dw.get(f"{DW}/studies?PatientName=nobody").get_json() == []
    inc = dw.get(f"{DW}/studies?StudyInstanceUID={study}&includefield=00100021,SOPClassesInStudy").get_json()[0]
    assert "00100021" in inc and value(inc, "00080062") == "1.2.840.10008.5.1.4.1.1.2"
    allf = dw.get(f"{DW}/studies?StudyInstanceUID={study}&includefield=all").get_json()[0]
    assert "00100021" in allf and "00081030" in allf
    ser = dw.get(f"{DW}/studies/{study}/series").get_json()
    assert [value(s, "0020000E") for s in ser] == [series] and value(ser[0], "00201209") == 3
    assert value(ser[0], "00081190").endswith(f"/studies/{study}/series/{series}")
    assert len(dw.get(f"{DW}/series?Modality=CT").get_json()) == 2
    insts = dw.get(f"{DW}/studies/{study}/series/{series}/instances").get_json()
    assert [value(i, "00200013") for i in insts] == [1, 2, 3]
    assert len(dw.get(f"{DW}/studies/{study}/instances").get_json()) == 3
    assert len(dw.get(f"{DW}/instances?SOPInstanceUID={uid_of(parts[1])}").get_json()) == 1

    # WADO-RS: study, series, instance as multipart/related application/dicom, bytes as stored
    r = dw.get(f"{DW}/studies/{study}", headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    got = split_multipart(r.headers["Content-Type"], r.data)
    assert sorted(c for _t, c in got) == sorted(parts)
    assert all("transfer-syntax=1.2.840.10008.1.2.1" in t for t, _c in got)
    sop = uid_of(parts[0])
    r = dw.get(f"{DW}/studies/{study}/series/{series}/instances/{sop}",
               headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert [c for _t, c in split_multipart(r.headers["Content-Type"], r.data)] == [parts[0]]
    r = dw.get(f"{DW}/studies/{study}/series/{series}")
    assert len(split_multipart(r.headers["Content-Type"], r.data)) == 3

    # metadata with BulkDataURIs
    meta = dw.get(f"{DW}/studies/{study}/series/{series}/instances/{sop}/metadata").get_json()
    assert len(meta) == 1 and value(meta[0], "00080018") == sop
    uri = meta[0]["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"/instances/{sop}/bulkdata/7FE00010") and "Value" not in meta[0]["7FE00010"]
    assert len(dw.get(f"{DW}/studies/{study}/metadata").get_json()) == 3
    r = dw.get(uri.replace("http://testserver", ""))
    (ptype, pixels), = split_multipart(r.headers["Content-Type"], r.data)
    assert ptype.startswith("application/octet-stream") and pixels == dcmread(BytesIO(parts[0])).PixelData

    # frames
    r = dw.get(f"{DW}/studies/{study}/series/{series}/instances/{sop}/frames/1",
               headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    (ptype, frame), = split_multipart(r.headers["Content-Type"], r.data)
    assert frame == dcmread(BytesIO(parts[0])).PixelData and len(frame) == 64 * 64 * 2

    # rendered: JPEG by default, PNG on request, window and viewport honoured
    base = f"{DW}/studies/{study}/series/{series}/instances/{sop}"
    r = dw.get(f"{base}/rendered")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert Image.open(BytesIO(r.data)).size == (64, 64)
    r = dw.get(f"{base}/rendered?window=100,50&viewport=32,32", headers={"Accept": "image/png"})
    assert r.headers["Content-Type"] == "image/png"
    img = np.asarray(Image.open(BytesIO(r.data)))
    assert img.shape == (32, 32)
    px = dcmread(BytesIO(parts[0])).pixel_array.astype(float) - 1024
    assert (px > 125).mean() > 0.5 and img.mean() > 128  # mostly above the narrow window: bright
    full = np.asarray(Image.open(BytesIO(dw.get(f"{base}/rendered?window=0,100000&quality=95",
                                                headers={"Accept": "image/png"}).data)))
    assert 120 < full.mean() < 136  # a window far wider than the data: mid grey
    small = dw.get(f"{base}/rendered?quality=5").data
    assert len(small) < len(dw.get(f"{base}/rendered?quality=100").data)
    r = dw.get(f"{base}/frames/1/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    for url in (f"{DW}/studies/{study}/thumbnail", f"{DW}/studies/{study}/series/{series}/thumbnail",
                f"{base}/thumbnail?viewport=16,16"):
        r = dw.get(url, headers={"Accept": "text/html,image/webp,*/*;q=0.8"})  # a browser
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg", url
        assert max(Image.open(BytesIO(r.data)).size) <= 128

    # WADO-URI
    q = f"requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
    r = dw.get(f"{DW}/wado?{q}&contentType=application/dicom")
    assert r.status_code == 200 and r.data == parts[0]
    r = dw.get(f"{DW}?{q}&contentType=image/png&rows=32&windowCenter=40&windowWidth=400")
    assert r.headers["Content-Type"] == "image/png" and Image.open(BytesIO(r.data)).size == (32, 32)
    assert dw.get(f"{DW}/wado?{q}").headers["Content-Type"] == "image/jpeg"

    # every request audited, with the ImagingStudy and Patient as entities
    flush_audits(dw.application)  # written in batches by a background thread
    events = dw.get("/fhir/AuditEvent?_count=500").get_json()
    kinds = [e["resource"]["type"]["code"] for e in events.get("entry", [])]
    assert kinds.count("110107") >= 2 and kinds.count("110112") >= 10 and kinds.count("110106") >= 10
    ev = next(e["resource"] for e in events["entry"] if e["resource"]["type"]["code"] == "110106"
              and any(en["what"].get("identifier", {}).get("value") == f"urn:oid:{study}"
                      for en in e["resource"]["entity"]))
    refs = {en["what"].get("reference") for en in ev["entity"]}
    assert f"ImagingStudy/{ims['id']}" in refs and ims["subject"]["reference"] in refs


def test_stow_media_type_and_multipart_errors(dw):
    good = ct_bytes()
    r = dw.post(f"{DW}/studies", data=good, headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and r.get_json()["resourceType"] == "OperationOutcome"
    assert "multipart/related" in r.get_json()["issue"][0]["diagnostics"]
    r = dw.post(f"{DW}/studies", data=multipart([good]),
                headers={"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=x'})
    assert r.status_code == 415
    r = dw.post(f"{DW}/studies", data=multipart([good]),
                headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400 and "boundary" in r.get_json()["issue"][0]["diagnostics"]
    r = dw.post(f"{DW}/studies", data=multipart([good])[:-40], headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 400 and "Malformed" in r.get_json()["issue"][0]["diagnostics"]
    r = dw.post(f"{DW}/studies", data=b"no parts here", headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 400
    # nothing was stored by any of these
    assert dw.get(f"{DW}/studies").get_json() == []


def test_stow_partial_failure_202_and_all_failed_409(dw):
    study, _series, parts = _study(2)
    r = stow(dw, [parts[0], b"this is not DICOM" * 20, parts[1]])
    assert r.status_code == 202
    body = r.get_json()
    assert len(body["00081199"]["Value"]) == 2
    failed = body["00081198"]["Value"]
    assert len(failed) == 1 and value(failed[0], "00081197") == 0xC000
    assert "Warning" in r.headers
    assert len(dw.get(f"{DW}/studies/{study}/instances").get_json()) == 2
    # all parts failing: 409; a part for another study than the URL's: 0xC409
    r = stow(dw, [b"junk"])
    assert r.status_code == 409 and value(r.get_json()["00081198"]["Value"][0], "00081197") == 0xC000
    other = ct_bytes()
    r = stow(dw, [other, parts[0]], url=f"{DW}/studies/{study}")
    assert r.status_code == 202
    failed = r.get_json()["00081198"]["Value"]
    assert value(failed[0], "00081197") == 0xC409 and value(failed[0], "00081155") == uid_of(other)
    assert dw.get(f"{DW}/studies?StudyInstanceUID={dcmread(BytesIO(other)).StudyInstanceUID}").get_json() == []


def test_unknown_uids_404_and_unsupported_renderings_406(dw):
    study, series, parts = _study(1)
    assert stow(dw, parts).status_code == 200
    sop = uid_of(parts[0])
    nobody = generate_uid()
    for url in (f"{DW}/studies/{nobody}", f"{DW}/studies/{nobody}/metadata",
                f"{DW}/studies/{study}/series/{nobody}", f"{DW}/studies/{study}/series/{series}/instances/{nobody}",
                f"{DW}/studies/{nobody}/series", f"{DW}/studies/{nobody}/thumbnail",
                f"{DW}/studies/{study}/series/{series}/instances/{sop}/frames/2",
                f"{DW}/studies/{study}/series/{series}/instances/{sop}/bulkdata/00091001",
                f"{DW}/wado?requestType=WADO&studyUID={nobody}&seriesUID={series}&objectUID={sop}"):
        r = dw.get(url)
        assert r.status_code == 404, url
        assert r.get_json()["resourceType"] == "OperationOutcome"
    base = f"{DW}/studies/{study}/series/{series}/instances/{sop}"
    r = dw.get(f"{base}/rendered", headers={"Accept": "application/pdf"})
    assert r.status_code == 406 and "image/jpeg" in r.get_json()["issue"][0]["diagnostics"]
    assert dw.get(f"{base}/rendered", headers={"Accept": "video/mp4"}).status_code == 406
    assert dw.get(f"{DW}/studies/{study}/rendered").status_code == 406
    assert dw.get(f"{base}", headers={"Accept": "application/json"}).status_code == 406
    assert dw.get(f"{DW}/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406
    assert dw.get(f"{base}/frames/1", headers={"Accept": "image/jpeg"}).status_code == 406
    assert dw.get(f"{base}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    }).status_code == 406
    assert dw.get(f"{DW}/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                  "&contentType=application/pdf").status_code == 406
    # bad parameters: 400
    for url in (f"{base}/rendered?window=abc", f"{base}/rendered?viewport=10", f"{base}/rendered?quality=0",
                f"{base}/frames/x", f"{base}/frames/0", f"{DW}/studies?NoSuchAttribute=1",
                f"{DW}/studies?limit=-1", f"{DW}/wado?requestType=WADO", f"{DW}/wado?requestType=other"):
        assert dw.get(url).status_code == 400, url


def _fresh_uids(path: str) -> bytes:
    ds = dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_compressed_instances_render_frames_and_transcode(dw):
    files = {
        "jpeg": get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"),
        "j2k": get_testdata_file("MR_small_jp2klossless.dcm"),
        "rle": get_testdata_file("SC_rgb_rle_2frame.dcm"),
        "jls": get_testdata_file("MR_small_jpeg_ls_lossless.dcm"),
    }
    datas = {k: _fresh_uids(v) for k, v in files.items()}  # some test files share their UIDs
    r = stow(dw, list(datas.values()))
    assert r.status_code == 200, r.get_json()
    for name, data in datas.items():
        ds = dcmread(BytesIO(data))
        base = f"{DW}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        r = dw.get(f"{base}/rendered", headers={"Accept": "image/png"})
        assert r.status_code == 200, (name, r.data[:300])
        img = Image.open(BytesIO(r.data))
        assert img.size == (ds.Columns, ds.Rows)
        # as stored, and converted to Explicit VR Little Endian on request
        r = dw.get(base, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        (_t, got), = split_multipart(r.headers["Content-Type"], r.data)
        assert got == data
        r = dw.get(base, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                            'transfer-syntax=1.2.840.10008.1.2.1'})
        assert r.status_code == 200, (name, r.data[:300])
        (ptype, got), = split_multipart(r.headers["Content-Type"], r.data)
        conv = dcmread(BytesIO(got))
        assert ptype.endswith("transfer-syntax=1.2.840.10008.1.2.1")
        assert conv.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        if name != "jpeg":  # lossless: same pixels
            assert np.array_equal(conv.pixel_array, ds.pixel_array)
        # frames: compressed as stored, or decoded to octet-stream
        frames_n = int(ds.get("NumberOfFrames", 1) or 1)
        r = dw.get(f"{base}/frames/1", headers={"Accept": "multipart/related; type=\"application/octet-stream\""})
        assert r.status_code == 200, (name, r.data[:300])
        (ptype, raw), = split_multipart(r.headers["Content-Type"], r.data)
        assert ptype.startswith("application/octet-stream")
        assert len(raw) == ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        r = dw.get(f"{base}/frames/1,{frames_n}", headers={"Accept": "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*"})
        assert len(split_multipart(r.headers["Content-Type"], r.data)) == 2
    ds = dcmread(BytesIO(datas["j2k"]))
    base = f"{DW}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r = dw.get(f"{base}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    (ptype, j2k), = split_multipart(r.headers["Content-Type"], r.data)
    assert ptype.startswith("image/jp2") and j2k[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c")
    # a multi-frame RLE: thumbnails pick the middle frame, frame rendered by number
    ds = dcmread(BytesIO(datas["rle"]))
    base = f"{DW}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    assert dw.get(f"{base}/frames/{ds.NumberOfFrames}/rendered").status_code == 200
    assert dw.get(f"{base}/frames/{ds.NumberOfFrames + 1}/rendered").status_code == 404
    meta = dw.get(f"{base}/metadata").get_json()[0]
    assert meta["7FE00010"]["vr"] == "OB" and "BulkDataURI" in meta["7FE00010"]


def test_cors_preflight_and_json_error_shape(dw):
    r = dw.options(f"{DW}/studies")
    assert r.status_code == 204
    r = dw.delete(f"{DW}/studies")
    assert r.status_code == 405 and json.loads(r.data)["resourceType"] == "OperationOutcome"
