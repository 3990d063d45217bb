"""The DICOM node's fast path: shortcuts around pynetdicom and pydicom that take most of the
per-instance CPU off a C-STORE (see bench/dicom.py). Everything here leans on the libraries'
insides (a module's `time`, a socket's `recv`, the DIMSE provider's `send_msg`, the command set's
byte layout), so it lives in this one module, runs only with the library versions it was tested
with (pinned in pyproject: `TESTED`), and can be turned off (`Settings.dicom_fast_path`,
`FHIRSERVER_DICOM_FAST_PATH=0`): the node then runs on the libraries alone. The contract tests
(tests/dicom/test_fastpath_contract.py) check that every shortcut's bytes equal the library's.

Nothing is patched for the whole process except the one unavoidable rebind (`_WakingTime`),
which is put in place by a starting node, acts only for that node's associations and is
undone when the last node stops."""
from __future__ import annotations

import copy
import logging
import select
import struct
import threading
import weakref
from io import BytesIO
from typing import Any

import pydicom
import pynetdicom
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import association, dul, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from dicom import encoding

log = logging.getLogger("fhirserver.dicom")

# [lowest, highest) release each shortcut was checked against; outside it the node runs plain
TESTED = {"pynetdicom": (pynetdicom.__version__, (3, 0), (3, 1)),
          "pydicom": (pydicom.__version__, (3, 0), (3, 1))}
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # Pixel Data, Double/Float Pixel Data


def supported() -> bool:
    """Are the installed pynetdicom and pydicom releases ones the shortcuts were tested with?"""
    for version, low, high in TESTED.values():
        try:
            release = tuple(int(p) for p in version.split(".")[:2])
        except ValueError:
            return False
        if not low <= release < high:
            return False
    return True


# -- encoders: the same bytes as the libraries' own, without building Datasets -------------------
def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2s2xI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ui(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _text(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b" " if len(data) % 2 else data


def meta_header(sop_class: str, sop_uid: str, ts: str, calling: str) -> bytes:
    """`encoding.meta_header`'s bytes (explicit VR little endian File Meta Information), written
    directly; non-ASCII values go to pydicom."""
    try:
        body = b"".join([
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _ui(sop_class)),
            _element(0x00020003, b"UI", _ui(sop_uid)),
            _element(0x00020010, b"UI", _ui(ts)),
            _element(0x00020012, b"UI", _ui(encoding.IMPLEMENTATION_UID)),
            _element(0x00020013, b"SH", _text(encoding.IMPLEMENTATION_VERSION)),
            _element(0x00020016, b"AE", _text(calling[:16])) if calling else b"",
        ])
    except UnicodeEncodeError:
        return encoding.meta_header(sop_class, sop_uid, ts, calling)
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _command(tag: int, value: bytes) -> bytes:
    """One command set element (group 0000, implicit VR little endian)."""
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def store_rsp_command(primitive: Any) -> bytes | None:
    """The command set of a C-STORE-RSP (any status, with or without an Error Comment) as
    pynetdicom encodes it through a pydicom Dataset; None for what it does not cover (an
    Offending Element, a non-ASCII or multi-valued comment, missing UIDs)."""
    comment = primitive.ErrorComment
    if (primitive.MessageIDBeingRespondedTo is None or primitive.Status is None
            or primitive.OffendingElement or not primitive.AffectedSOPClassUID
            or not primitive.AffectedSOPInstanceUID or (comment and "\\" in comment)):
        return None
    try:
        parts = [
            _command(0x0002, _ui(primitive.AffectedSOPClassUID)),
            _command(0x0100, struct.pack("<H", 0x8001)),
            _command(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
            _command(0x0800, struct.pack("<H", 0x0101)),
            _command(0x0900, struct.pack("<H", primitive.Status)),
        ]
        if comment:
            parts.append(_command(0x0902, _text(comment)))
        parts.append(_command(0x1000, _ui(primitive.AffectedSOPInstanceUID)))
    except (UnicodeEncodeError, struct.error):
        return None
    body = b"".join(parts)
    return _command(0x0000, struct.pack("<I", len(body))) + body


def read_header_in_place(buf: BytesIO, ts: UID) -> tuple[Any, int]:
    """`encoding.read_header` without copying the received bytes: the data set is read where it
    is (deflated ones need inflating and go the library way)."""
    buf.seek(0)
    try:
        ds = read_dataset(buf, ts.is_implicit_VR, ts.is_little_endian,
                          stop_when=lambda tag, vr, length: tag in _PIXEL_TAGS)
        return ds, buf.tell()
    finally:
        buf.seek(0)


# -- transport: per association, on objects the node owns ---------------------------------------
class _Contexts(list):
    """The server's supported presentation contexts. pynetdicom deep-copies them for every
    association; with every storage class times every transfer syntax that took ~50 ms of CPU
    per association. This copy is the same for what an association can change (the objects and
    their transfer syntax lists); the UIDs inside are immutable strings and are shared."""

    def __deepcopy__(self, memo: dict) -> list:
        out = []
        for cx in self:
            dup = copy.copy(cx)
            dup.__dict__ = {k: (list(v) if isinstance(v, list) else v) for k, v in cx.__dict__.items()}
            out.append(dup)
        return out


def _recv_exact(self: Any, nr_bytes: int) -> bytearray:
    """AssociationSocket.recv without the 4 KiB read loop: one buffer, filled in place (a 0.5 MB
    PDU took 130 recv calls and as many appends under the GIL)."""
    buf = bytearray(nr_bytes)
    got = 0
    with memoryview(buf) as view:
        while got < nr_bytes:
            n = self.socket.recv_into(view[got:], nr_bytes - got)
            if not n:  # connection broken: what we have so far, as pynetdicom does
                break
            got += n
    if got < nr_bytes:
        del buf[got:]
    return buf


def _send_msg(dimse: Any, primitive: Any, context_id: int) -> None:
    """DIMSEServiceProvider.send_msg with C-STORE responses encoded directly (when no handler
    wants the DIMSE message object): a fifth of the receiving CPU went to encoding them."""
    if type(primitive) is C_STORE and not dimse.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        command = store_rsp_command(primitive)
        if command is not None and (not dimse.maximum_pdu_size or len(command) + 6 <= dimse.maximum_pdu_size):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
            dimse.dul.send_pdu(pdata)
            return
    type(dimse).send_msg(dimse, primitive, context_id)


# -- the one rebind: pynetdicom's reactors poll with sleeps on their module's `time` ------------
class _WakingTime:
    """Stands in for the `time` module inside pynetdicom's association and DUL modules.

    Their reactors poll with 1 ms sleeps (`time.sleep` looked up in the module, no hook to
    override per association), which adds up to 2 ms to every C-STORE round trip. For the
    threads of the AEs in `owners` the same sleeps end as soon as there is something to do:
    bytes on the socket for a DUL thread, a decoded DIMSE message for an association thread.
    Never later than before; every other thread and sleep gets the real one."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.owners: weakref.WeakSet = weakref.WeakSet()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, secs: float) -> None:
        if secs > 0.005 or not self.owners:
            self._real.sleep(secs)
            return
        thread = threading.current_thread()
        try:
            if isinstance(thread, DULServiceProvider) and thread.assoc.ae in self.owners:
                sock = thread.socket.socket if thread.socket is not None else None
                if not thread.to_provider_queue.empty():
                    return  # something to send: no need to wait
                if sock is not None and sock.fileno() >= 0:
                    select.select([sock], [], [], secs)
                    return
            elif isinstance(thread, Association) and thread.ae in self.owners:
                q = thread.dimse.msg_queue
                with q.not_empty:
                    if not q._qsize():  # noqa: SLF001
                        q.not_empty.wait(secs)
                return
        except (OSError, ValueError, AttributeError):
            pass
        self._real.sleep(secs)


_REACTOR_MODULES = (association, dul)


def attach_wakeups(ae: Any) -> None:
    """The reactors of `ae`'s associations wake on work (idempotent)."""
    for module in _REACTOR_MODULES:
        if not isinstance(module.time, _WakingTime):
            module.time = _WakingTime(module.time)
        module.time.owners.add(ae)


def detach_wakeups(ae: Any) -> None:
    """Undo `attach_wakeups` for `ae`; the real `time` is back once no AE uses it."""
    for module in _REACTOR_MODULES:
        stand_in = module.time
        if isinstance(stand_in, _WakingTime):
            stand_in.owners.discard(ae)
            if not stand_in.owners:
                module.time = stand_in._real  # noqa: SLF001


def wakeups_installed() -> bool:
    return any(isinstance(m.time, _WakingTime) for m in _REACTOR_MODULES)


class FastPath:
    """The node's choice: shortcuts on (`enabled` and a tested library release) or the
    libraries' own code. The node and its handlers ask this object, never the module state."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled) and supported()
        if enabled and not self.enabled:
            log.warning("dicom: fast path off: pynetdicom %s / pydicom %s are not the tested releases",
                        pynetdicom.__version__, pydicom.__version__)

    def meta_header(self, sop_class: str, sop_uid: str, ts: str, calling: str) -> bytes:
        fn = meta_header if self.enabled else encoding.meta_header
        return fn(sop_class, sop_uid, ts, calling)

    def read_header(self, buf: BytesIO, header: bytes, ts: UID) -> tuple[Any, int]:
        if self.enabled and ts != encoding.DEFLATED and ts.is_transfer_syntax:
            return read_header_in_place(buf, ts)
        return encoding.read_header(buf, header, ts)

    def contexts(self, contexts: list) -> list:
        return _Contexts(contexts) if self.enabled else contexts

    def tune(self, assoc: Any) -> None:
        """Per accepted association: the in-place socket read and the direct C-STORE replies."""
        if not self.enabled:
            return
        sock = assoc.dul.socket
        if sock is not None and sock.socket is not None:
            sock.recv = _recv_exact.__get__(sock)
        assoc.dimse.send_msg = _send_msg.__get__(assoc.dimse)

    def attach(self, ae: Any) -> None:
        if self.enabled:
            attach_wakeups(ae)

    def detach(self, ae: Any) -> None:
        detach_wakeups(ae)
