"""The server's services, built once per process from Settings: what every entry point shares.

Use `build_services` anywhere a Repository is needed (HTTP app, loader, DICOM node, operations):
it wires the search engine's indexer into the repository, so every write is indexed.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from conformance import capability_statement
from fhirserver.audit import AuditTrail
from fhirserver.blobs import BlobStore, open_store
from fhirserver.broadcast import Broadcast
from fhirserver.config import Settings
from fhirserver.interactions import Context, OperationRegistry
from fhirserver.jobs import Jobs
from fhirserver.search import SearchEngine
from fhirserver.storage import Repository, install_budget, make_engine, upgrade
from fhirserver.subscriptions import advertise as advertise_topics, install as install_subscriptions


@dataclasses.dataclass
class Services:
    settings: Settings
    repo: Repository
    search: SearchEngine
    started: str
    audit: Any = None                      # fhirserver.audit.AuditTrail
    # the `$operations` every Context of this process routes to (built by the app factory)
    operations: OperationRegistry = dataclasses.field(default_factory=OperationRegistry)
    jobs: Any = None                       # fhirserver.jobs.Jobs: the queue and its job kinds
    # what patient-wide operations need from the packages owning other tables
    # (fhirserver.operations.ports.Ports, built by the app factory)
    ports: Any = None
    # changes every host must see at once (revocations, clients, keys): stamps and the caches
    # kept under them (fhirserver.broadcast)
    broadcast: Any = None
    # the bytes of DICOM instances and export files (`--blob-url`: data folder or object store)
    blobs: BlobStore | None = None
    # this app's cached bearer-token checks (smart_auth.bearer.TokenChecks, set by smart_auth.install):
    # per Services, so two apps in one process never answer a token from each other's checks
    tokens: Any = None
    closed: bool = False

    def __post_init__(self) -> None:
        if self.blobs is None:
            self.blobs = open_store(self.settings)

    def fhir_base(self) -> str:
        """The FHIR base URL (`Settings.fhir_base`: configured, or the listen address)."""
        return self.settings.fhir_base

    def root_url(self) -> str:
        """The server's public root URL (`Settings.root_url`), for /auth, /portal, /dicomweb links."""
        return self.settings.root_url

    def context(self, access: Any, principal: Any = None) -> Context:
        """An interaction Context for any entry point (REST, DICOM bridge, portal, jobs): always
        with the caller's own policy (and principal), or a named `SystemJob` for the server's own
        work."""
        return Context(base=self.fhir_base(), default_count=self.settings.default_page_size,
                       max_count=self.settings.max_page_size, postgres=self.repo.postgres,
                       access=access, search=self.search, services=self, operations=self.operations,
                       principal=principal)

    def close(self, timeout: float = 10.0) -> None:
        """Stop what this process runs in the background for these services, in dependency
        order, and release their connections (idempotent). Why: a process that builds several
        apps (tests, the `--dev` seed app) would otherwise keep each one's threads writing into
        the database and each one's pool holding connections until the process exits.

        Job workers stop first (a running job may still record audit events), then the audit
        writer writes its last batch, then the Broadcast listener ends, and the pool goes last."""
        if self.closed:
            return
        self.closed = True
        if self.broadcast is not None:
            self.broadcast.stop()  # ends (within a second) while the job threads end
        if self.jobs is not None:
            self.jobs.stop()
        if self.audit is not None:
            self.audit.close(timeout)
        if self.broadcast is not None:
            self.broadcast.close(timeout)
        self.repo.engine.dispose()

    def capability_statement(self) -> dict[str, Any]:
        """The CapabilityStatement without the SMART security section (see interactions.capabilities)."""
        return advertise_topics(capability_statement(self.fhir_base(), self.search.supported_params, self.started,
                                                     self.operations.definitions))


def build_services(settings: Settings, *, upgrade_schema: bool = False,
                   operations: OperationRegistry | None = None, ports: Any = None) -> Services:
    """`operations`: the `$operations` its Contexts route to, built by the app factory
    (`fhirserver.operations.build_registry`); without one (the DICOM node, the loader) a Context
    routes none, and `$name` answers 404. `ports`: the logins, imaging and share-link owners
    those operations reach (`fhirserver.operations.ports.Ports`)."""
    engine = make_engine(settings.effective_database_url)
    install_budget(engine, settings.statement_seconds)  # cancels statements past the request budget
    if upgrade_schema:
        upgrade(engine)
    search = SearchEngine(settings.fhir_base)
    repo = Repository(engine, indexer=search.index_rows)
    jobs = Jobs(engine)
    install_subscriptions(repo, settings, jobs)  # the outbox: events recorded in the writer's transaction
    return Services(settings, repo, search, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    AuditTrail(repo, search=search), operations or OperationRegistry(), jobs, ports,
                    broadcast=Broadcast(engine), blobs=open_store(settings))
