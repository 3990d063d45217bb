"""The DICOM node: one pynetdicom AE serving the DIMSE services of `dicom.handlers` on
settings.dicom_port, with the transport of `dicom.transport` and, unless turned off, the
shortcuts of `dicom.fastpath`."""
from __future__ import annotations

import logging
import time
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove, Verification,
)
from pynetdicom.transport import AssociationServer

from dicom import bridge_work, recovery
from dicom.commit import GroupCommitter
from dicom.fastpath import FastPath
from dicom.handlers import STORAGE_CLASSES, TRANSFER_SYNTAXES, DimseHandlers
from dicom.nodes import list_nodes
from dicom.transport import LoadBoard, listen_socket, server_class
from fhirserver.audit import AuditTrail
from fhirserver.blobs import BlobStore, open_store
from fhirserver.config import Settings
from fhirserver.services import build_services
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

__all__ = ["DicomNode", "LoadBoard", "STORAGE_CLASSES", "listen_socket", "run"]


class _RegistryAE(AE):
    """An AE whose required calling AE titles come from the node registry (cached briefly)."""

    listen_fd: int | None = None
    load: Any = None

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

    def make_server(self, address: Any, *args: Any, server_class: Any = None, **kwargs: Any) -> Any:
        fast = self._node.fast
        cls = _server_class_for(server_class or AssociationServer, self.listen_fd, fast)
        return super().make_server(address, *args, server_class=cls, **kwargs)


def _server_class_for(base: type, listen_fd: int | None, fast: FastPath) -> type:
    return server_class(base, listen_fd, tune=fast.tune, contexts=fast.contexts)


class DicomNode:
    """One SCP bound to settings.dicom_port with AE title settings.dicom_ae."""

    def __init__(self, settings: Settings, repo: Repository | None = None,
                 store: BlobStore | None = None, audit: AuditTrail | None = None) -> None:
        self.settings = settings
        # what this node built itself is closed by its `stop` (what it was given, its owner closes)
        self._owned: list[Any] = []
        if repo is None:  # the services' repository indexes every write (ImagingStudy searchable)
            services = build_services(settings)
            self._owned.append(services)
            repo, audit, store = services.repo, audit or services.audit, store or services.blobs
        self.repo = repo
        if audit is None:
            audit = AuditTrail(repo)  # the process's one audit writer
            self._owned.append(audit)
        self.audit = audit
        self.engine = self.repo.engine
        self.store: BlobStore = store or open_store(settings)
        self.dicomweb_base = settings.root_url + "/dicomweb"
        self.fast = FastPath(settings.dicom_fast_path)
        self.services = DimseHandlers(settings, self.repo, self.audit, self.store, self.fast)
        self.ae = self._make_ae()
        self.server: Any = None
        self.committer: GroupCommitter | None = None
        self.work: bridge_work.WorkRunner | None = None

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
        return self.services.handlers()

    def study_policy(self, study_uid: str) -> Any:
        return self.services.study_policy(study_uid)

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
        self.committer = self.services.committer = GroupCommitter(self.repo)
        self.work = bridge_work.WorkRunner(self.repo, self.dicomweb_base, self.study_policy)
        self.work.start()
        self.ae.listen_fd = listen_fd
        self.ae.load = load
        self.fast.attach(self.ae)
        log.info("dicom: %s listening on %s:%s (fast path %s)", self.settings.dicom_ae, *address,
                 "on" if self.fast.enabled else "off")
        handlers = self.handlers()
        if load is not None:
            handlers.append((evt.EVT_CONN_CLOSE, load.closed))
        if block:
            try:
                return self.ae.start_server(address, block=True, evt_handlers=handlers)
            finally:
                self.fast.detach(self.ae)
        self.server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        return self.server

    def stop(self) -> None:
        self.ae.shutdown()
        self.fast.detach(self.ae)
        if self.work is not None:
            self.work.stop()
        if self.committer is not None:
            self.committer.close()
        self.services.committer = None
        for owned in self._owned:  # the audit writer's last batch; the services' threads and pool
            owned.close()


def run(settings: Settings) -> None:
    """`fhirserver dicom`: serve until interrupted."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    DicomNode(settings).start(block=True)
