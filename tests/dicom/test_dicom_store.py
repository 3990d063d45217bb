"""C-ECHO, C-STORE (dcmtk storescu across SOP classes and transfer syntaxes), the store and index."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless
from sqlalchemy import func, select

from conftest import wait_for
from fhirserver.blobs import LocalBlobStore
from dicom.tables import dicom_instance, dicom_series, dicom_study
from dicom_synth import make_ct, make_series

# pydicom's bundled test files, one per transfer syntax, with distinct SOP Instance UIDs
SAMPLES = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",            # explicit VR little endian
    "rtplan.dcm": "1.2.840.10008.1.2",                # implicit VR little endian
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",        # deflated
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",       # JPEG extended
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "J2K_pixelrep_mismatch.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",         # JPEG 2000
    "test-SR.dcm": "1.2.840.10008.1.2.1",             # structured report
    "waveform_ecg.dcm": "1.2.840.10008.1.2.1",        # waveform
}


def _dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta information (what travels in a C-STORE)."""
    from pydicom.filereader import read_preamble, _read_file_meta_info

    with open(path, "rb") as f:
        read_preamble(f, False)
        _read_file_meta_info(f)
        return f.read()


def count(engine, table) -> int:  # noqa: ANN001
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar_one()


def test_echo(dcmtk):  # noqa: ANN001
    dcmtk.run("echoscu")


def test_unknown_caller_rejected(dcmtk):  # noqa: ANN001
    proc = dcmtk.run("echoscu", aet="STRANGER", check=False)
    assert proc.returncode != 0
    assert "Rejected" in proc.stderr + proc.stdout or "reject" in (proc.stderr + proc.stdout).lower()


def test_storescu_folder_every_transfer_syntax(dcmtk, node, tmp_path):  # noqa: ANN001
    folder = tmp_path / "in"
    folder.mkdir()
    for name, ts in SAMPLES.items():
        src = Path(get_testdata_file(name))
        assert str(dcmread(src, stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts
        shutil.copy(src, folder / name)
    make_series(folder / "ct", 3)
    rle = make_ct(folder / "rle.dcm", number=7)  # RLE lossless, compressed by pydicom itself
    ds = dcmread(rle)
    ds.compress(RLELossless)
    ds.save_as(rle)
    # storescu proposes compressed transfer syntaxes only when told (-x?): one run per family;
    # the uncompressed files (and the synthetic CT series) go as one folder
    flags = {"1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
             "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
             "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
             "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.1.99": "-xd"}
    for name, ts in list(SAMPLES.items()) + [("rle.dcm", RLELossless)]:
        if ts in flags:
            single = tmp_path / name
            shutil.move(folder / name, single)
            dcmtk.run("storescu", flags[ts], files=[single])
    dcmtk.run("storescu", "+sd", "+r", files=[folder])
    engine = node.engine
    assert count(engine, dicom_instance) == len(SAMPLES) + 4
    store: LocalBlobStore = node.store
    with engine.connect() as c:
        rows = {r.sop_uid: r for r in c.execute(select(dicom_instance))}
    for name, ts in SAMPLES.items():
        src = Path(get_testdata_file(name))
        uid = str(dcmread(src, stop_before_pixels=True).SOPInstanceUID)
        row = rows[uid]
        assert row.transfer_syntax == ts, name
        with store.open(row.storage_key) as f:
            kept = f.read()
        got, want = dcmread(store.local_path(row.storage_key)), dcmread(src)
        assert got.SOPInstanceUID == uid and got.file_meta.TransferSyntaxUID == ts
        if "PixelData" in want:
            assert got.PixelData == want.PixelData, name  # compressed frames kept as sent
    rle_row = rows[str(ds.SOPInstanceUID)]
    assert rle_row.transfer_syntax == RLELossless


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm"])
def test_stored_byte_for_byte(node, name):  # noqa: ANN001
    """What arrives is what is kept: pynetdicom sends the file's data set bytes unchanged."""
    src = Path(get_testdata_file(name))
    status = _pynetdicom_send(node, src)
    assert status.Status == 0
    with node.engine.connect() as c:
        row = c.execute(select(dicom_instance)).one()
    with node.store.open(row.storage_key) as f:
        assert f.read().endswith(_dataset_bytes(src))


def test_resend_is_idempotent(dcmtk, node, tmp_path):  # noqa: ANN001
    study, _, paths = make_series(tmp_path / "s", 2, patient_id="IDEM")
    dcmtk.run("storescu", files=paths)
    dcmtk.run("storescu", files=paths)
    assert count(node.engine, dicom_instance) == 2
    assert count(node.engine, dicom_series) == 1
    assert count(node.engine, dicom_study) == 1
    assert len(node.store.keys()) == 2
    assert not list(node.store.tmp.glob("*"))  # made at the first write


def _pynetdicom_send(node, path: Path):  # noqa: ANN001, ANN202
    from pynetdicom import AE
    from pynetdicom.presentation import StoragePresentationContexts

    from pynetdicom import _config

    ae = AE(ae_title="TESTSCU")
    meta = dcmread(path, stop_before_pixels=True)
    ae.add_requested_context(meta.file_meta.MediaStorageSOPClassUID,
                             [meta.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", node.settings.dicom_port, ae_title="FHIRSERVER")
    assert assoc.is_established
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the data set bytes go straight from the file
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()


def test_bad_data_gets_failure_and_leaves_nothing(node, tmp_path):  # noqa: ANN001
    good = make_ct(tmp_path / "good.dcm")
    # no SOP Instance UID in the data set (the file meta still names one)
    ds = dcmread(good)
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "nouid.dcm")
    status = _pynetdicom_send(node, tmp_path / "nouid.dcm")
    assert status.Status == 0xA900
    # unparsable: valid file meta, garbage data set
    raw = good.read_bytes()
    meta_end = len(raw) - len(_dataset_bytes(good))
    (tmp_path / "garbage.dcm").write_bytes(raw[:meta_end] + b"\x08\x00\x18\x00UI\xff\xff" + b"\x01" * 40)
    status = _pynetdicom_send(node, tmp_path / "garbage.dcm")
    assert status.Status in (0xC000, 0xA900)
    # data set of another class than the one announced
    ds = dcmread(good)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR while the command says CT
    ds.save_as(tmp_path / "mismatch.dcm")
    status = _pynetdicom_send(node, tmp_path / "mismatch.dcm")
    assert status.Status == 0xA900
    assert count(node.engine, dicom_instance) == 0
    assert node.store.keys() == []
    assert not list(node.store.tmp.glob("*"))  # made at the first write


def test_aborted_association_leaves_no_partial_file(node, tmp_path):  # noqa: ANN001
    """An association aborted in the middle of a large data set stores nothing of it."""
    import socket as _socket

    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    big = make_ct(tmp_path / "big.dcm", size=512)
    ae = AE(ae_title="TESTSCU")
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 2
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.settings.dicom_port, ae_title="FHIRSERVER",
                         max_pdu=16384)
    assert assoc.is_established
    # send only the first P-DATA fragments of the C-STORE, then cut the connection
    asock = assoc.dul.socket
    sent = {"n": 0}  # the SCP accepts PDUs of any size, so the data set travels in one
    orig_send = asock.send

    def cut(data):  # noqa: ANN001, ANN202
        sent["n"] += 1
        if len(data) > 100_000:  # the PDU carrying the pixel data: half of it, then gone
            orig_send(data[: len(data) // 2])
            asock.socket.shutdown(_socket.SHUT_RDWR)
            raise OSError("cut")
        return orig_send(data)

    asock.send = cut  # type: ignore[method-assign]
    try:
        assoc.send_c_store(big)
    except Exception:  # noqa: BLE001
        pass
    assoc.abort()
    wait_for(lambda: not node.ae.active_associations, timeout=10)
    assert count(node.engine, dicom_instance) == 0
    assert node.store.keys() == []
    assert not list(node.store.tmp.glob("*"))  # made at the first write
