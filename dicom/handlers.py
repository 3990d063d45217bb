"""The DIMSE services of the node: C-ECHO, C-STORE, C-FIND (patient/study root, worklist),
C-MOVE and C-GET, asking the access gate with the calling node's principal and auditing each
service. C-STORE keeps the received bytes as they are and answers success only once the
instance's file is on disk (fsync, `Settings.dicom_fsync`) and its index row and its study's
ImagingStudy work item are committed (group commit across associations); the ImagingStudy
bridge runs when the association ends."""
from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import ModalityWorklistInformationFind, StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine

from dicom import audit as dicom_audit
from dicom import bridge_work, completeness, index, query, telemetry, worklist
from dicom.access import node_policy, visible_studies
from dicom.commit import CommitFailed, GroupCommitter
from dicom.durable import make_durable
from dicom.fastpath import FastPath
from dicom.nodes import get_node
from dicom.tables import dicom_instance, dicom_study
from dicom.transport import set_nodelay
from fhirserver.audit import AuditTrail
from fhirserver.blobs import BlobStore
from fhirserver.config import Settings
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

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


class DimseHandlers:
    """The event handlers of one node. `committer` is set while the node runs (None: stores
    are answered with a failure, the file stays for start-up recovery)."""

    def __init__(self, settings: Settings, repo: Repository, audit: AuditTrail, store: BlobStore,
                 fast: FastPath) -> None:
        self.settings = settings
        self.repo = repo
        self.audit = audit
        self.engine: Engine = repo.engine
        self.store = store
        self.fast = fast
        self.dicomweb_base = settings.root_url + "/dicomweb"
        self.committer: GroupCommitter | None = None

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
        header = self.fast.meta_header(sop_class, sop_uid, ts, calling)
        try:
            ds, pixel_offset = self.fast.read_header(buf, header, ts)
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
            if self.settings.dicom_fsync:  # on disk before the row that points at it says "stored"
                make_durable(self.store, key)
        except OSError as exc:  # a full disk, or the object store down (BlobStoreUnavailable)
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

    def _send(self, event: Any, items: list[dict[str, Any]]) -> Iterator[tuple[int, Any]]:
        """The sub-operations of a C-MOVE or C-GET, one instance each, until the SCU cancels."""
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, self._dataset(item)

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
        yield from self._send(event, items)

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
        yield from self._send(event, items)
