"""The fast path's contract with the libraries it shortcuts: every hand-written byte equals
what pynetdicom or pydicom write themselves (C-STORE replies of every status kind, the file
meta header, the header read in place), and its one process-level rebind exists only while a
node with the fast path runs."""
from __future__ import annotations

import copy
import time
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID, generate_uid,
)
from pynetdicom import association, dul
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from conftest import free_port
from dicom import encoding, fastpath
from dicom.handlers import (
    CANNOT_UNDERSTAND, DOES_NOT_MATCH, INCOMPLETE, NOT_AUTHORIZED, OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED,
)
from dicom.scp import DicomNode


def test_tested_releases_are_installed() -> None:
    """pyproject pins pynetdicom and pydicom to the releases in fastpath.TESTED."""
    assert fastpath.supported()


class _Recorder:
    """A stand-in DUL and association: records the P-DATA primitives a DIMSE provider sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_pdu(self, pdu: Any) -> None:
        self.sent.append(pdu)

    @staticmethod
    def get_handlers(event: Any) -> list:
        return []


def _provider(max_pdu: int) -> tuple[Any, _Recorder]:
    """pynetdicom's DIMSE provider of an accepted association whose peer takes `max_pdu`."""
    rec = _Recorder()
    assoc = SimpleNamespace(dul=rec, get_handlers=rec.get_handlers, is_requestor=False,
                            requestor=SimpleNamespace(maximum_length=max_pdu))
    return DIMSEServiceProvider(assoc), rec


def _wire(sent: list[Any]) -> list[bytes]:
    out = []
    for pdata in sent:
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out.append(pdu.encode())
    return out


def _rsp(status: int, comment: str | None = None, msg_id: int = 7, sop_uid: str = "1.2.3.4.5") -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment
    return rsp


def _both(rsp: C_STORE, max_pdu: int = 0) -> tuple[list[bytes], list[bytes]]:
    """(pynetdicom's own bytes on the wire, the fast path's)."""
    lib, lib_rec = _provider(max_pdu)
    DIMSEServiceProvider.send_msg(lib, copy.deepcopy(rsp), 3)
    fast, fast_rec = _provider(max_pdu)
    fastpath._send_msg(fast, copy.deepcopy(rsp), 3)
    return _wire(lib_rec.sent), _wire(fast_rec.sent)


STATUSES = [
    pytest.param(0x0000, None, id="success"),
    pytest.param(0xB000, None, id="warning-coercion"),
    pytest.param(INCOMPLETE, "pixel data 12 of 524288 bytes", id="warning-incomplete-comment"),
    pytest.param(INCOMPLETE, "odd", id="warning-odd-comment"),
    pytest.param(OUT_OF_RESOURCES, None, id="failure-out-of-resources"),
    pytest.param(DOES_NOT_MATCH, None, id="failure-does-not-match"),
    pytest.param(CANNOT_UNDERSTAND, None, id="failure-cannot-understand"),
    pytest.param(SOP_CLASS_NOT_SUPPORTED, None, id="failure-sop-class"),
    pytest.param(NOT_AUTHORIZED, None, id="failure-not-authorized"),
    pytest.param(CANNOT_UNDERSTAND, "x" * 64, id="failure-longest-comment"),
]


@pytest.mark.parametrize("status,comment", STATUSES)
@pytest.mark.parametrize("msg_id,sop_uid", [(1, "1.2.3.4"), (65535, "1.2.840.99.1.2.3.4.5.6.7.8.9")])
def test_store_reply_equals_pynetdicom(status: int, comment: str | None, msg_id: int, sop_uid: str) -> None:
    rsp = _rsp(status, comment, msg_id, sop_uid)
    assert fastpath.store_rsp_command(rsp) is not None, "the fast path encodes this reply itself"
    lib, fast = _both(rsp)
    assert fast == lib and len(fast) == 1


def test_uncovered_replies_go_to_pynetdicom() -> None:
    """What the encoder does not cover is pynetdicom's own encoding, byte for byte."""
    offending = _rsp(0xA900)
    offending.OffendingElement = [0x00100010]
    small_pdu = _rsp(0x0000)
    for rsp, max_pdu in ((offending, 0), (small_pdu, 40), (_rsp(0xC000, "a\\b"), 0)):
        lib, fast = _both(rsp, max_pdu)
        assert fast == lib and fast
    assert fastpath.store_rsp_command(offending) is None


@pytest.mark.parametrize("args", [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "SCU"),
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2", "ABCDEFGHIJKLMNOPQ"),
    ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.99.1.2.3.4.5.6.7.8.9", "1.2.840.10008.1.2.4.50", ""),
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1.99", "A"),
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1", "MODALITÄT"),
])
@pytest.mark.filterwarnings("ignore:Invalid value for VR AE")
def test_meta_header_equals_pydicom(args: tuple[str, ...]) -> None:
    assert fastpath.meta_header(*args) == encoding.meta_header(*args)


def _received(ts: UID, pixels: bool = True) -> BytesIO:
    """A data set as a C-STORE delivers it: encoded in `ts`, no file meta."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientName, ds.PatientID, ds.Rows, ds.Columns = "Doe^Jane", "P1", 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    if pixels:
        ds.PixelData = b"\x01\x00" * 16
    f = DicomBytesIO()
    f.is_little_endian, f.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    write_dataset(f, ds)
    return BytesIO(f.getvalue())


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("pixels", [True, False])
def test_header_read_in_place_equals_pydicom(ts: UID, pixels: bool) -> None:
    buf = _received(ts, pixels)
    header = encoding.meta_header(CTImageStorage, "1.2.3", ts, "SCU")
    ref, ref_offset = encoding.read_header(buf, header, ts)
    fast, fast_offset = fastpath.FastPath(True).read_header(buf, header, ts)
    assert fast_offset == ref_offset
    assert [(e.tag, e.value) for e in fast] == [(e.tag, e.value) for e in ref]
    assert buf.tell() == 0
    if pixels:
        assert buf.getvalue()[fast_offset:fast_offset + 4] == (
            b"\x7f\xe0\x00\x10" if not ts.is_little_endian else b"\xe0\x7f\x10\x00")


def test_contexts_copy_like_deepcopy() -> None:
    node_ae = DicomNode.__new__(DicomNode)
    contexts = fastpath.FastPath(True).contexts(DicomNode._make_ae(_fake_node(node_ae)).supported_contexts)
    dup, ref = copy.deepcopy(contexts), copy.deepcopy(list(contexts))
    assert [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in dup] == \
        [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in ref]
    dup[0].transfer_syntax.clear()
    assert contexts[0].transfer_syntax, "the copy is independent where an association changes it"


def _fake_node(node: Any) -> Any:
    node.settings = SimpleNamespace(dicom_ae="FHIRSERVER", dicom_reject_unknown=False)
    return node


def _reactor_time() -> tuple[Any, Any]:
    return association.time, dul.time


def test_wakeups_only_while_a_fast_node_runs(settings, clean_dicom, tmp_path) -> None:  # noqa: ANN001
    assert _reactor_time() == (time, time)
    nodes = [DicomNode(settings.replace(dicom_port=free_port(), data_dir=tmp_path / f"v{i}",
                                        dicom_fast_path=True), repo=clean_dicom) for i in range(2)]
    for n in nodes:
        n.start()
    try:
        assert all(isinstance(t, fastpath._WakingTime) for t in _reactor_time())
        assert set(association.time.owners) == {n.ae for n in nodes}
        nodes[0].stop()
        assert all(isinstance(t, fastpath._WakingTime) for t in _reactor_time())
    finally:
        nodes[1].stop()
        nodes[0].stop()
    assert _reactor_time() == (time, time)


def test_fast_path_off_touches_nothing(settings, clean_dicom, tmp_path) -> None:  # noqa: ANN001
    node = DicomNode(settings.replace(dicom_port=free_port(), data_dir=tmp_path / "v", dicom_fast_path=False),
                     repo=clean_dicom)
    node.start()
    try:
        assert not node.fast.enabled
        assert _reactor_time() == (time, time)
        assert type(node.server.contexts) is list
    finally:
        node.stop()


def test_other_threads_sleep_for_real() -> None:
    """A stand-in `time` sleeps the full time for threads of AEs that are not the node's."""
    class OtherAE:
        pass

    other = OtherAE()
    stand_in = fastpath._WakingTime(time)
    stand_in.owners.add(other)
    t0 = time.monotonic()
    for _ in range(20):
        stand_in.sleep(0.002)
    assert time.monotonic() - t0 >= 0.04
