"""The DICOM node: a pynetdicom SCP for C-ECHO, C-STORE, C-FIND (patient/study root, worklist),
C-MOVE and C-GET. Handlers stay thin: received bytes go to the store as they are, index rows are
written in batches, and the ImagingStudy bridge runs when the association ends."""
from __future__ import annotations

import logging
import socket
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
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

from dicom import index, query, worklist
from dicom.bridge import update_studies
from dicom.nodes import get_node, list_nodes
from dicom.store import InstanceStore, file_store
from fhirserver.config import Settings
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1447.1")
IMPLEMENTATION_VERSION = "FHIRSERVER_01"
STORAGE_CLASSES = [cx.abstract_syntax for cx in AllStoragePresentationContexts]
TRANSFER_SYNTAXES = list(dict.fromkeys(list(ALL_TRANSFER_SYNTAXES) + list(AllTransferSyntaxes)))
BATCH = 64
_UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, "1.2.840.10008.1.2.2"}

# C-STORE statuses (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122


def set_nodelay(event: Any) -> None:
    """TCP_NODELAY on every association socket (both directions): no 40 ms Nagle stalls."""
    try:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


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


class DicomNode:
    """One SCP bound to settings.dicom_port with AE title settings.dicom_ae."""

    def __init__(self, settings: Settings, repo: Repository | None = None,
                 store: InstanceStore | None = None) -> None:
        self.settings = settings
        if repo is None:  # the services' repository indexes every write (ImagingStudy searchable)
            from fhirserver.services import build_services

            repo = build_services(settings).repo
        self.repo = repo
        self.engine = self.repo.engine
        self.store = store or file_store(settings.data_dir)
        self.dicomweb_base = settings.fhir_base[:-len("/fhir")] + "/dicomweb"
        self.ae = self._make_ae()
        self.server: Any = None

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
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_ACSE_RECV, self.on_acse),   # A-RELEASE-RQ: index before answering it
            (evt.EVT_RELEASED, self.on_end),
            (evt.EVT_ABORTED, self.on_end),
            (evt.EVT_CONN_CLOSE, self.on_end),
        ]

    def start(self, block: bool = False) -> Any:
        address = (self.settings.dicom_host or self.settings.host, self.settings.dicom_port)
        log.info("dicom: %s listening on %s:%s", self.settings.dicom_ae, *address)
        if block:
            return self.ae.start_server(address, block=True, evt_handlers=self.handlers())
        self.server = self.ae.start_server(address, block=False, evt_handlers=self.handlers())
        return self.server

    def stop(self) -> None:
        self.ae.shutdown()

    # -- C-STORE ---------------------------------------------------------------------------
    @staticmethod
    def _pending(assoc: Any) -> dict[str, Any]:
        state = getattr(assoc, "_fhir_state", None)
        if state is None:
            state = {"records": [], "studies": set(), "lock": threading.Lock(), "done": False}
            assoc._fhir_state = state
        return state

    def on_store(self, event: Any) -> int:
        req = event.request
        ts = UID(event.context.transfer_syntax)
        sop_class = UID(req.AffectedSOPClassUID or "")
        sop_uid = str(req.AffectedSOPInstanceUID or "")
        if sop_class not in STORAGE_CLASSES:
            return SOP_CLASS_NOT_SUPPORTED
        raw = req.DataSet.getvalue() if req.DataSet is not None else b""
        if not raw:
            return CANNOT_UNDERSTAND
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = IMPLEMENTATION_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        calling = (event.assoc.requestor.ae_title or "").strip()
        if calling:
            meta.SourceApplicationEntityTitle = calling[:16]
        head = BytesIO()
        head.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(head, meta, enforce_standard=True)
        header = head.getvalue()
        try:
            ds = dcmread(BytesIO(header + raw), stop_before_pixels=True)
            if str(ds.get("SOPInstanceUID", "")).strip() != sop_uid.strip():
                log.warning("dicom: C-STORE %s: SOP Instance UID missing or different", sop_uid)
                return DOES_NOT_MATCH
            if str(ds.get("SOPClassUID", "")).strip() != str(sop_class):
                log.warning("dicom: C-STORE %s: SOP Class UID missing or different", sop_uid)
                return DOES_NOT_MATCH
            record_args = ds
            index.extract(ds, str(ts), "0" * 64, 0, calling)  # validates before anything is written
        except index.InvalidInstance as exc:
            log.warning("dicom: C-STORE %s rejected: %s", sop_uid, exc)
            return DOES_NOT_MATCH
        except Exception as exc:  # noqa: BLE001 - unparsable data of any kind
            log.warning("dicom: C-STORE %s unparsable: %s", sop_uid, exc)
            return CANNOT_UNDERSTAND
        try:
            key, size = self.store.put((header, raw))
        except OSError as exc:
            log.error("dicom: cannot write instance %s: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        record = index.extract(record_args, str(ts), key, size, calling)
        state = self._pending(event.assoc)
        with state["lock"]:
            state["records"].append(record)
            full = len(state["records"]) >= BATCH
        if full:
            try:
                self._flush(state)
            except Exception:  # noqa: BLE001
                log.exception("dicom: index write failed")
                return OUT_OF_RESOURCES
        return 0x0000

    def _flush(self, state: dict[str, Any]) -> None:
        with state["lock"]:
            records, state["records"] = state["records"], []
        if not records:
            return
        try:
            with self.repo.transaction(write=True) as tx:
                state["studies"] |= index.write_batch(tx.conn, records)
        except Exception:
            with state["lock"]:
                state["records"] = records + state["records"]
            raise

    def on_acse(self, event: Any) -> None:
        from pynetdicom.pdu_primitives import A_RELEASE

        if isinstance(event.primitive, A_RELEASE) and event.primitive.result is None:
            self.on_end(event)  # the A-RELEASE-RP goes out after this: the sender sees it done

    def on_end(self, event: Any) -> None:
        state = getattr(event.assoc, "_fhir_state", None)
        if state is None or state["done"]:
            return
        state["done"] = True
        for attempt in range(3):
            try:
                self._flush(state)
                break
            except Exception:  # noqa: BLE001
                log.exception("dicom: index write failed (attempt %d)", attempt + 1)
                time.sleep(0.5)
        if state["studies"]:
            update_studies(self.repo, state["studies"], self.dicomweb_base)

    # -- C-FIND ----------------------------------------------------------------------------
    def on_find(self, event: Any) -> Iterator[tuple[int, Any]]:
        cls = UID(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
        except Exception:  # noqa: BLE001
            yield 0xC000, None
            return
        try:
            if cls == ModalityWorklistInformationFind:
                results = worklist.find(self.repo, identifier)
            else:
                root = "study" if cls == StudyRootQueryRetrieveInformationModelFind else "patient"
                with self.engine.connect() as conn:
                    results = list(query.find(conn, identifier, root=root,
                                              retrieve_ae=self.settings.dicom_ae))
                results = self._filter_found(event, results)
                for ds in results:
                    ds.SpecificCharacterSet = "ISO_IR 192"
        except query.QueryError as exc:
            log.warning("dicom: C-FIND rejected: %s", exc)
            yield 0xA900, None
            return
        except Exception:  # noqa: BLE001
            log.exception("dicom: C-FIND failed")
            yield 0xC000, None
            return
        for ds in results:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    # -- access: a modality bound to an organization sees that organization's studies -----------
    def _policy(self, event: Any) -> Any:
        """None (everything) for a node without an organization; else the policy of a system
        principal bound to it, the same rules as a backend service of that organization."""
        from dicom.nodes import get_node

        node = get_node(self.engine, (event.assoc.requestor.ae_title or "").strip())
        if node is None or not node.organization:
            return None
        from fhirserver.access import Principal, parse_scopes
        from smart_auth.fhir import build_policy

        principal = Principal(client_id=f"dicom:{node.ae_title}", role="system",
                              scopes=tuple(parse_scopes(["system/*.rs"])), organizations=(node.organization,))
        return build_policy(self.repo, self.settings, principal)

    def _visible(self, event: Any, study_uids: Any) -> set[str] | None:
        """The visible subset of these studies for the calling node (None: no restriction)."""
        pol = self._policy(event)
        if pol is None:
            return None
        from dicom.web.common import visible_studies

        with self.engine.connect() as conn:
            return visible_studies(conn, pol, study_uids)

    def _filter_found(self, event: Any, results: list[Any]) -> list[Any]:
        uids = {str(ds.StudyInstanceUID) for ds in results if "StudyInstanceUID" in ds}
        pids = {str(ds.PatientID) for ds in results if "StudyInstanceUID" not in ds and "PatientID" in ds}
        if pids:  # PATIENT level: a patient shows when one of their studies is visible
            from sqlalchemy import select

            from dicom.tables import dicom_study

            with self.engine.connect() as conn:
                rows = list(conn.execute(select(dicom_study.c.patient_id, dicom_study.c.study_uid)
                                         .where(dicom_study.c.patient_id.in_(sorted(pids)))))
            visible = self._visible(event, {u for _p, u in rows})
            if visible is None:
                return results
            shown = {p for p, u in rows if u in visible}
            return [ds for ds in results if "StudyInstanceUID" in ds or str(ds.PatientID) in shown]
        visible = self._visible(event, uids)
        if visible is None:
            return results
        return [ds for ds in results if str(ds.get("StudyInstanceUID", "")) in visible]

    # -- C-MOVE / C-GET ----------------------------------------------------------------------
    def _retrieve(self, event: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            items = query.retrieve(conn, event.identifier)
        visible = self._visible(event, {it["StudyInstanceUID"] for it in items if it.get("StudyInstanceUID")})
        if visible is None:
            return items
        return [it for it in items if it.get("StudyInstanceUID") in visible]

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

    def on_move(self, event: Any) -> Iterator[Any]:
        dest = (event.move_destination or b"")
        dest = dest.decode() if isinstance(dest, bytes) else str(dest)
        node = get_node(self.engine, dest.strip())
        if node is None:
            log.warning("dicom: C-MOVE to unknown destination %r", dest)
            yield None, None
            return
        try:
            items = self._retrieve(event)
        except query.QueryError:
            yield node.host, node.port
            yield 0xA900, None
            return
        yield node.host, node.port, {"contexts": self.contexts_for(items),
                                     "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)]}
        yield len(items)
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, self._dataset(item)

    def on_get(self, event: Any) -> Iterator[Any]:
        try:
            items = self._retrieve(event)
        except query.QueryError:
            yield 0
            yield 0xA900, None
            return
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
