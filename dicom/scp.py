"""The DICOM node: a pynetdicom SCP for C-ECHO, C-STORE, C-FIND (patient/study root, worklist),
C-MOVE and C-GET. Handlers stay thin: received bytes go to the store as they are; C-STORE answers
success once the instance's index row and its study's ImagingStudy work item are committed (group
commit across associations); the ImagingStudy bridge runs when the association ends."""
from __future__ import annotations

import copy
import logging
import os
import select
import socket
import struct
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _at_pixel_data, read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove, Verification,
)
from pynetdicom.presentation import AllStoragePresentationContexts
from sqlalchemy import select as sql_select

from dicom import audit as dicom_audit
from dicom import bridge_work, completeness, index, query, recovery, telemetry, worklist
from dicom.access import node_policy, visible_studies
from dicom.commit import CommitFailed, GroupCommitter
from dicom.nodes import get_node, list_nodes
from dicom.store import InstanceStore, file_store
from dicom.tables import dicom_instance, dicom_study
from fhirserver.audit import AuditTrail
from fhirserver.config import Settings
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1447.1")
IMPLEMENTATION_VERSION = "FHIRSERVER_01"
STORAGE_CLASSES = [cx.abstract_syntax for cx in AllStoragePresentationContexts]
TRANSFER_SYNTAXES = list(dict.fromkeys(list(ALL_TRANSFER_SYNTAXES) + list(AllTransferSyntaxes)))
_UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, "1.2.840.10008.1.2.2"}

# C-STORE statuses (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
INCOMPLETE = 0xB007  # warning: Data Set does not match SOP Class (kept, flagged)
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124  # Refused: not authorized (PS3.7 C.4.2)


def set_nodelay(event: Any) -> None:
    """TCP_NODELAY on every association socket (both directions): no 40 ms Nagle stalls."""
    try:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def listen_socket(address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket several receiving processes can share (inherited by the children)."""
    host, port = address
    family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


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


def _us(tag: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag, 2, value)


def _uid_elem(tag: int, value: str) -> bytes:
    data = _ui(value)
    return struct.pack("<HHI", 0x0000, tag, len(data)) + data


def store_rsp_command(primitive: Any) -> bytes | None:
    """The command set of a successful C-STORE-RSP, implicit VR little endian, as pynetdicom
    encodes it (through a pydicom Dataset, twice); None when it is not that plain case."""
    if (primitive.Status != 0x0000 or primitive.MessageIDBeingRespondedTo is None
            or primitive.ErrorComment or primitive.OffendingElement
            or not primitive.AffectedSOPClassUID or not primitive.AffectedSOPInstanceUID):
        return None
    try:
        body = b"".join([
            _uid_elem(0x0002, primitive.AffectedSOPClassUID),
            _us(0x0100, 0x8001),
            _us(0x0120, primitive.MessageIDBeingRespondedTo),
            _us(0x0800, 0x0101),
            _us(0x0900, 0x0000),
            _uid_elem(0x1000, primitive.AffectedSOPInstanceUID),
        ])
    except (UnicodeEncodeError, struct.error):
        return None
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _send_msg(dimse: Any, primitive: Any, context_id: int) -> None:
    """DIMSEServiceProvider.send_msg with the C-STORE success response encoded directly (when no
    handler wants the DIMSE message object): a fifth of the receiving CPU went to encoding it."""
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu_primitives import P_DATA

    if type(primitive) is C_STORE and not dimse.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        command = store_rsp_command(primitive)
        if command is not None and (not dimse.maximum_pdu_size or len(command) + 6 <= dimse.maximum_pdu_size):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
            dimse.dul.send_pdu(pdata)
            return
    type(dimse).send_msg(dimse, primitive, context_id)


def _request_handler() -> type:
    from pynetdicom.transport import RequestHandler

    class Handler(RequestHandler):
        def _create_association(self) -> Any:
            assoc = super()._create_association()
            sock = assoc.dul.socket
            if sock is not None and sock.socket is not None:
                sock.recv = _recv_exact.__get__(sock)
            assoc.dimse.send_msg = _send_msg.__get__(assoc.dimse)
            return assoc

    return Handler


def _server_class(base: type, listen_fd: int | None) -> type:
    """`base` (pynetdicom's AssociationServer) with TCP_NODELAY set at accept and, when
    `listen_fd` is given, serving an inherited listening socket shared with other processes."""

    _RequestHandler = _request_handler()

    class _Server(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("request_handler") is None:
                kwargs["request_handler"] = _RequestHandler
            super().__init__(*args, **kwargs)
            self.contexts = _Contexts(self.contexts)

        def server_bind(self) -> None:
            if listen_fd is None:
                super().server_bind()
                return
            fresh = self.socket
            self.socket = socket.socket(fileno=os.dup(listen_fd))
            fresh.close()
            self.socket.setblocking(False)  # another process may take a connection first
            self.server_address = self.socket.getsockname()

        def server_activate(self) -> None:
            if listen_fd is None:
                super().server_activate()

        def get_request(self) -> tuple[socket.socket, Any]:
            load = getattr(self.ae, "load", None)
            if listen_fd is not None and load is not None:
                # every receiving process is woken by a new connection: one with more
                # associations than the least busy lets that one take it (spreads the load)
                deadline = time.monotonic() + 0.2
                while load.mine() > load.least() and time.monotonic() < deadline:
                    time.sleep(0.002)
                    if not select.select([self.socket], [], [], 0)[0]:
                        raise BlockingIOError("taken by another receiving process")
            client, address = super().get_request()  # BlockingIOError (OSError): lost the race
            if load is not None:
                load.opened()
            client.setblocking(True)
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return client, address

    return _Server


_DEFLATED = "1.2.840.10008.1.2.1.99"


class LoadBoard:
    """Open associations per receiving process, in a small shared file (one uint32 slot each),
    so that the processes sharing a listening socket take turns."""

    def __init__(self, path: str, slot: int) -> None:
        import mmap

        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self._slots = len(self._map) // 4
        self._slot = slot
        self._count = 0
        self._lock = threading.Lock()
        self._write()

    @staticmethod
    def create(path: str, processes: int) -> None:
        with open(path, "wb") as f:
            f.write(b"\x00" * 4 * processes)

    def _write(self) -> None:
        struct.pack_into("<I", self._map, 4 * self._slot, max(self._count, 0))

    def mine(self) -> int:
        return self._count

    def least(self) -> int:
        return min(struct.unpack_from(f"<{self._slots}I", self._map))

    def opened(self) -> None:
        with self._lock:
            self._count += 1
            self._write()

    def closed(self, _event: Any = None) -> None:
        with self._lock:
            self._count = max(self._count - 1, 0)
            self._write()


class _WakingTime:
    """Stands in for the `time` module inside pynetdicom's association and DUL modules.

    Their reactors poll with 1 ms sleeps, which adds up to 2 ms to every C-STORE round trip. Here
    the same sleeps end as soon as there is something to do: bytes on the socket for a DUL
    thread, a decoded DIMSE message for an association thread. Never later than before, and any
    other sleep is the real one."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, secs: float) -> None:
        if secs > 0.005:
            self._real.sleep(secs)
            return
        from pynetdicom.association import Association
        from pynetdicom.dul import DULServiceProvider

        thread = threading.current_thread()
        try:
            if isinstance(thread, DULServiceProvider):
                sock = thread.socket.socket if thread.socket is not None else None
                if not thread.to_provider_queue.empty():
                    return  # something to send: no need to wait
                if sock is not None and sock.fileno() >= 0:
                    select.select([sock], [], [], secs)
                    return
            elif isinstance(thread, Association):
                q = thread.dimse.msg_queue
                with q.not_empty:
                    if not q._qsize():  # noqa: SLF001
                        q.not_empty.wait(secs)
                return
        except (OSError, ValueError, AttributeError):
            pass
        self._real.sleep(secs)


def install_wakeups() -> None:
    """Idempotent: pynetdicom's reactors wake on work instead of sleeping a full millisecond."""
    import time as real_time

    from pynetdicom import association, dul

    for module in (association, dul):
        if not isinstance(module.time, _WakingTime):
            module.time = _WakingTime(real_time)


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
    """Preamble, "DICM" and the File Meta Information group written in front of the received
    data set: the same bytes pydicom's write_file_meta_info writes, without building a Dataset."""
    try:
        body = b"".join([
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _ui(sop_class)),
            _element(0x00020003, b"UI", _ui(sop_uid)),
            _element(0x00020010, b"UI", _ui(ts)),
            _element(0x00020012, b"UI", _ui(IMPLEMENTATION_UID)),
            _element(0x00020013, b"SH", _text(IMPLEMENTATION_VERSION)),
            _element(0x00020016, b"AE", _text(calling[:16])) if calling else b"",
        ])
    except UnicodeEncodeError:  # not plain ASCII: let pydicom encode it
        return _meta_header_pydicom(sop_class, sop_uid, ts, calling)
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _meta_header_pydicom(sop_class: str, sop_uid: str, ts: str, calling: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if calling:
        meta.SourceApplicationEntityTitle = calling[:16]
    head = BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue()


def _read_header(buf: BytesIO, header: bytes, ts: UID) -> tuple[Any, int]:
    """The data set's elements before the pixel data, read in place from the received buffer
    (deflated data sets go through dcmread, which inflates them), and the offset where the
    read stopped: the Pixel Data element, or the end (0 for deflated ones)."""
    if ts == _DEFLATED or not ts.is_transfer_syntax:
        with buf.getbuffer() as raw:
            return dcmread(BytesIO(header + bytes(raw)), stop_before_pixels=True), 0
    buf.seek(0)
    try:
        ds = read_dataset(buf, ts.is_implicit_VR, ts.is_little_endian, stop_when=_at_pixel_data)
        return ds, buf.tell()
    finally:
        buf.seek(0)


class _RegistryAE(AE):
    """An AE whose required calling AE titles come from the node registry (cached briefly)."""

    def __init__(self, node: "DicomNode", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node = node
        self._cache: tuple[float, list[str]] = (0.0, [])

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        if not self._node.settings.dicom_reject_unknown:
            return []
        at, titles = self._cache
        if time.monotonic() - at > 2.0:
            titles = [n.ae_title for n in list_nodes(self._node.engine)] or ["\x00no-node\x00"]
            self._cache = (time.monotonic(), titles)
        return titles

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # set by AE.__init__
        pass

    def forget_registry(self) -> None:
        self._cache = (0.0, [])

    listen_fd: int | None = None
    load: Any = None

    def make_server(self, address: Any, *args: Any, server_class: Any = None, **kwargs: Any) -> Any:
        from pynetdicom.transport import AssociationServer

        return super().make_server(address, *args,
                                   server_class=_server_class(server_class or AssociationServer,
                                                              self.listen_fd), **kwargs)


class DicomNode:
    """One SCP bound to settings.dicom_port with AE title settings.dicom_ae."""

    def __init__(self, settings: Settings, repo: Repository | None = None,
                 store: InstanceStore | None = None, audit: AuditTrail | None = None) -> None:
        self.settings = settings
        if repo is None:  # the services' repository indexes every write (ImagingStudy searchable)
            from fhirserver.services import build_services

            services = build_services(settings)
            repo, audit = services.repo, audit or services.audit
        self.repo = repo
        self.audit = audit or AuditTrail(repo)  # the process's one audit writer
        self.engine = self.repo.engine
        self.store = store or file_store(settings.data_dir)
        self.dicomweb_base = settings.root_url + "/dicomweb"
        self.ae = self._make_ae()
        self.server: Any = None
        self.committer: GroupCommitter | None = None
        self.work: bridge_work.WorkRunner | None = None

    # -- setup -----------------------------------------------------------------------------
    def _make_ae(self) -> AE:
        ae = _RegistryAE(self, ae_title=self.settings.dicom_ae)
        ae.maximum_associations = 64
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        ae.add_supported_context(Verification)
        for cls in STORAGE_CLASSES:
            ae.add_supported_context(cls, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for cls in (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
                    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
                    ModalityWorklistInformationFind):
            ae.add_supported_context(cls, ALL_TRANSFER_SYNTAXES)
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, lambda e: 0x0000),
            (evt.EVT_C_STORE, telemetry.counted_store(self.on_store)),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_ACSE_RECV, self.on_acse),   # A-RELEASE-RQ: index before answering it
            (evt.EVT_RELEASED, self.on_end),
            (evt.EVT_ABORTED, self.on_end),
            (evt.EVT_CONN_CLOSE, self.on_end),
            *telemetry.handlers(self.settings.log_requests),  # metrics, one log line per association
        ]

    def recover(self) -> None:
        """Start-up reconciliation after a crash: stray temp files removed, files without an
        index row indexed, queued ImagingStudy updates done (see dicom.recovery)."""
        try:
            recovery.recover(self.repo, self.store, self.dicomweb_base, self.study_policy)
        except Exception:  # noqa: BLE001 - e.g. the database is away: serve (stores fail) and retry later
            log.exception("dicom: start-up recovery failed; queued work is retried in the background")

    def start(self, block: bool = False, listen_fd: int | None = None, load: LoadBoard | None = None) -> Any:
        address = (self.settings.dicom_host or self.settings.host, self.settings.dicom_port)
        self.recover()
        self.committer = GroupCommitter(self.repo)
        self.work = bridge_work.WorkRunner(self.repo, self.dicomweb_base, self.study_policy)
        self.work.start()
        self.ae.listen_fd = listen_fd
        self.ae.load = load
        install_wakeups()
        log.info("dicom: %s listening on %s:%s", self.settings.dicom_ae, *address)
        handlers = self.handlers()
        if load is not None:
            handlers.append((evt.EVT_CONN_CLOSE, load.closed))
        if block:
            return self.ae.start_server(address, block=True, evt_handlers=handlers)
        self.server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        return self.server

    def stop(self) -> None:
        self.ae.shutdown()
        if self.work is not None:
            self.work.stop()
        if self.committer is not None:
            self.committer.close()

    # -- C-STORE ---------------------------------------------------------------------------
    @staticmethod
    def _pending(assoc: Any) -> dict[str, Any]:
        state = getattr(assoc, "_fhir_state", None)
        if state is None:
            state = {"studies": set(), "lock": threading.Lock(), "done": False,
                     "allowed": {}, "stored": 0, "refused": 0}
            assoc._fhir_state = state
        return state

    def on_store(self, event: Any) -> int:
        req = event.request
        ts = UID(event.context.transfer_syntax)
        sop_class = UID(req.AffectedSOPClassUID or "")
        sop_uid = str(req.AffectedSOPInstanceUID or "")
        if sop_class not in STORAGE_CLASSES:
            return SOP_CLASS_NOT_SUPPORTED
        buf = req.DataSet
        if buf is None or not buf.getbuffer().nbytes:
            return CANNOT_UNDERSTAND
        calling = (event.assoc.requestor.ae_title or "").strip()
        header = meta_header(sop_class, sop_uid, ts, calling)
        try:
            ds, pixel_offset = _read_header(buf, header, ts)
            if str(ds.get("SOPInstanceUID", "")).strip() != sop_uid.strip():
                log.warning("dicom: C-STORE %s: SOP Instance UID missing or different", sop_uid)
                return DOES_NOT_MATCH
            if str(ds.get("SOPClassUID", "")).strip() != str(sop_class):
                log.warning("dicom: C-STORE %s: SOP Class UID missing or different", sop_uid)
                return DOES_NOT_MATCH
            record = index.extract(ds, str(ts), "", 0, calling)  # validates before anything is written
            if not self._may_add_to(event.assoc, record.study_uid):
                log.warning("dicom: C-STORE %s from %s refused: its study belongs to a patient outside "
                            "the node's access", sop_uid, calling)
                self._pending(event.assoc)["refused"] += 1
                return NOT_AUTHORIZED
            with buf.getbuffer() as raw:
                problem = completeness.check(ds, raw, pixel_offset, str(ts))
        except index.InvalidInstance as exc:
            log.warning("dicom: C-STORE %s rejected: %s", sop_uid, exc)
            return DOES_NOT_MATCH
        except Exception as exc:  # noqa: BLE001 - unparsable data of any kind
            log.warning("dicom: C-STORE %s unparsable: %s", sop_uid, exc)
            return CANNOT_UNDERSTAND
        try:
            with buf.getbuffer() as raw:  # the received bytes as they are, not copied
                key, size = self.store.put((header, raw))
        except OSError as exc:
            log.error("dicom: cannot write instance %s: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        record.instance["storage_key"], record.instance["size"] = key, size
        record.instance["incomplete"] = problem
        committer = self.committer
        try:
            if committer is None:
                raise CommitFailed("the node is not started")
            committer.submit(record)
        except CommitFailed as exc:  # the file stays: start-up recovery indexes it (flagged if not whole)
            log.error("dicom: C-STORE %s not indexed, failure sent: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        state = self._pending(event.assoc)
        state["stored"] += 1
        with state["lock"]:
            state["studies"].add(record.study_uid)
        if problem:
            log.warning("dicom: C-STORE %s from %s kept but INCOMPLETE (%s): warning status sent",
                        sop_uid, calling or "?", problem)
            from pydicom.dataset import Dataset

            status = Dataset()
            status.Status = INCOMPLETE
            status.ErrorComment = problem[:64]
            return status
        return 0x0000

    def _may_add_to(self, assoc: Any, study_uid: str) -> bool:
        """May the calling node add instances to this study? A new study, or one whose
        ImagingStudy is not made yet, is the sender's; an existing one only when the access gate
        lets the node see it (a clinic's modality cannot add images to another clinic's study).
        Asked once per study and association."""
        allowed = self._pending(assoc)["allowed"]
        if study_uid not in allowed:
            pol = self.policy(assoc)
            if not list(pol.row_filter("ImagingStudy")):
                allowed[study_uid] = True
            else:
                with self.engine.connect() as conn:
                    linked = conn.execute(sql_select(dicom_study.c.imaging_study_id).where(
                        dicom_study.c.study_uid == study_uid)).scalar()
                    allowed[study_uid] = not linked or bool(visible_studies(conn, pol, [study_uid]))
        return allowed[study_uid]

    def on_acse(self, event: Any) -> None:
        from pynetdicom.pdu_primitives import A_RELEASE

        if isinstance(event.primitive, A_RELEASE) and event.primitive.result is None:
            self.on_end(event)  # the A-RELEASE-RP goes out after this: the sender sees it done

    def on_end(self, event: Any) -> None:
        state = getattr(event.assoc, "_fhir_state", None)
        if state is None or state["done"]:
            return
        state["done"] = True
        with state["lock"]:
            studies = set(state["studies"])
        if studies:  # what fails stays queued: the background runner or the next start does it
            try:
                bridge_work.process(self.repo, studies, self.dicomweb_base,
                                    lambda _uid: self.policy(event.assoc))
            except Exception:  # noqa: BLE001 - e.g. the database went away
                log.exception("dicom: ImagingStudy updates left queued")
        if studies or state["refused"]:
            self.audit_event(event.assoc, "store", studies,
                             f"C-STORE: {state['stored']} instances stored, {state['refused']} refused", "C-STORE",
                             outcome="4" if state["refused"] else "0")

    # -- C-FIND ----------------------------------------------------------------------------
    def on_find(self, event: Any) -> Iterator[tuple[int, Any]]:
        cls = UID(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
        except Exception:  # noqa: BLE001
            yield 0xC000, None
            return
        mwl = cls == ModalityWorklistInformationFind
        level = "WORKLIST" if mwl else str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        model = "study" if cls == StudyRootQueryRetrieveInformationModelFind else "patient"
        what = "C-FIND MWL" if mwl else f"C-FIND {level} ({model} root)"
        disclosed: list[str] = []
        try:
            pol = self.policy(event.assoc)
            if mwl:
                results = worklist.find(self.repo, identifier, pol, disclosed)
            else:
                with self.engine.connect() as conn:
                    results = list(query.find(conn, identifier, policy=pol, root=model,
                                              retrieve_ae=self.settings.dicom_ae))
                for ds in results:
                    ds.SpecificCharacterSet = "ISO_IR 192"
        except query.QueryError as exc:
            log.warning("dicom: C-FIND rejected: %s", exc)
            self.audit_event(event.assoc, "query", (), f"{what}: rejected: {exc}", what, outcome="4")
            yield 0xA900, None
            return
        except Exception:  # noqa: BLE001
            log.exception("dicom: C-FIND failed")
            self.audit_event(event.assoc, "query", (), f"{what}: failed", what, outcome="8")
            yield 0xC000, None
            return
        uids = () if mwl else {str(ds.StudyInstanceUID) for ds in results if ds.get("StudyInstanceUID")}
        if not mwl and level == "PATIENT":  # a patient-level answer discloses the patients' studies
            with self.engine.connect() as conn:
                uids = self._patient_studies(conn, pol, results)
        self.audit_event(event.assoc, "query", uids, f"{what}: {len(results)} results", what,
                         references=disclosed)
        for ds in results:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    @staticmethod
    def _patient_studies(conn: Any, pol: Any, results: list[Any]) -> set[str]:
        """The visible studies of the patients a PATIENT-level answer named (for its AuditEvent)."""
        pids = sorted({str(ds.PatientID) for ds in results if ds.get("PatientID")})
        if not pids:
            return set()
        uids = set(conn.execute(sql_select(dicom_study.c.study_uid)
                                .where(dicom_study.c.patient_id.in_(pids[:500]))).scalars())
        return visible_studies(conn, pol, uids)

    # -- access and audit: the calling node's principal asks the one gate ------------------------
    def policy(self, assoc: Any) -> Any:
        """The access policy of the calling node (`dicom.access.node_policy`), once per
        association: a node bound to an organization sees and matches that organization's
        patients only; a node registered without one is site-wide."""
        pol = getattr(assoc, "_fhir_policy", None)
        if pol is None:
            pol = node_policy(self.repo, self.settings, assoc.requestor.ae_title or "")
            assoc._fhir_policy = pol
        return pol

    def study_policy(self, study_uid: str) -> Any:
        """The policy of the node that sent a study (its first instance's calling AE), for work
        done after its association ended: a restart's recovery, a retried ImagingStudy update."""
        with self.engine.connect() as conn:
            ae = conn.execute(sql_select(dicom_instance.c.source_ae).where(
                dicom_instance.c.study_uid == study_uid).order_by(dicom_instance.c.pk).limit(1)).scalar()
        return node_policy(self.repo, self.settings, ae or "")

    def audit_event(self, assoc: Any, kind: str, study_uids: Any, detail: str, what: str,
                    outcome: str = "0", references: Any = ()) -> None:
        """One AuditEvent for a DIMSE service, written by the process's audit writer (the same
        one as REST and DICOMweb), naming the calling node's principal and address."""
        ae = (assoc.requestor.ae_title or "").strip() or "?"
        try:
            info = dicom_audit.event_info(
                kind, study_uids, detail, outcome=outcome, channel="dimse", client=f"dicom:{ae}", user=None,
                remote=str(assoc.requestor.address or "unknown"), what=f"{what} from {ae}",
                references=references)
            dicom_audit.queue(self.audit, info)
        except Exception:  # noqa: BLE001 - auditing never fails the service
            log.exception("dicom: cannot queue the AuditEvent")

    # -- C-MOVE / C-GET ----------------------------------------------------------------------
    def _retrieve(self, event: Any) -> list[dict[str, Any]]:
        pol = self.policy(event.assoc)
        with self.engine.connect() as conn:
            return query.retrieve(conn, event.identifier, policy=pol)

    def _dataset(self, item: dict[str, Any]) -> Any:
        with self.store.open(item["_storage_key"]) as f:
            return dcmread(f)

    @staticmethod
    def contexts_for(items: list[dict[str, Any]]) -> list[Any]:
        pairs: dict[tuple[str, str], None] = {}
        for it in items:
            ts = it["_transfer_syntax"]
            pairs[(it["SOPClassUID"], "" if ts in _UNCOMPRESSED else ts)] = None
        out = []
        for cls, ts in list(pairs)[:128]:
            syntaxes = [ts] if ts else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            out.append(build_context(cls, syntaxes))
        return out

    def _for_destination(self, dest_ae: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What a C-MOVE may send to `dest_ae`: the destination is a node too, and a clinic's
        data never goes to another clinic's node (a site-wide destination, e.g. a PACS, takes
        what the caller may see)."""
        if not items:
            return items
        dest_pol = node_policy(self.repo, self.settings, dest_ae)
        with self.engine.connect() as conn:
            allowed = visible_studies(conn, dest_pol, self._studies_of(items))
        return [it for it in items if it.get("StudyInstanceUID") in allowed]

    @staticmethod
    def _studies_of(items: list[dict[str, Any]]) -> set[str]:
        return {it["StudyInstanceUID"] for it in items if it.get("StudyInstanceUID")}

    def on_move(self, event: Any) -> Iterator[Any]:
        dest = (event.move_destination or b"")
        dest = dest.decode() if isinstance(dest, bytes) else str(dest)
        node = get_node(self.engine, dest.strip())
        what = f"C-MOVE to {dest.strip()}"
        if node is None:
            log.warning("dicom: C-MOVE to unknown destination %r", dest)
            self.audit_event(event.assoc, "retrieve", (), f"{what}: unknown destination", what, outcome="4")
            yield None, None
            return
        try:
            items = self._retrieve(event)
        except query.QueryError as exc:
            self.audit_event(event.assoc, "retrieve", (), f"{what}: rejected: {exc}", what, outcome="4")
            yield node.host, node.port
            yield 0xA900, None
            return
        items = self._for_destination(node.ae_title, items)
        self.audit_event(event.assoc, "retrieve", self._studies_of(items), f"{what}: {len(items)} instances",
                         what)
        yield node.host, node.port, {"contexts": self.contexts_for(items),
                                     "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)]}
        yield len(items)
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, self._dataset(item)

    def on_get(self, event: Any) -> Iterator[Any]:
        what = "C-GET"
        try:
            items = self._retrieve(event)
        except query.QueryError as exc:
            self.audit_event(event.assoc, "retrieve", (), f"{what}: rejected: {exc}", what, outcome="4")
            yield 0
            yield 0xA900, None
            return
        self.audit_event(event.assoc, "retrieve", self._studies_of(items), f"{what}: {len(items)} instances",
                         what)
        yield len(items)
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, self._dataset(item)


def run(settings: Settings) -> None:
    """`fhirserver dicom`: serve until interrupted."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    DicomNode(settings).start(block=True)
