"""The access audit trail: one AuditEvent per authenticated request that touched resources.

Requests only queue a small record; a writer thread of each process turns the queue into
AuditEvent resources in one transaction every half second, written in batches (so a read stays
a read-only statement, costs no extra round trip, and the writes cost a few statements per batch
instead of one round trip per event: on PostgreSQL one COPY per table, `Tx.insert_built`). The
index rows of the trail's own events are read off their fixed shape (`fhirserver.audit_rows`)
rather than by the generic extraction, while the AuditEvent parameters are the HL7 ones. The buffer is bounded (see
`_bound`). Each event names the patients whose compartment the accessed resources belong to,
so a patient's access log is `AuditEvent?patient=Patient/x`.

The trade-off: if a process dies abruptly (SIGKILL, power loss) the reads and searches it
answered in its last ~0.5-1 s are not audited; a clean stop (SIGTERM, worker restart) flushes
the buffer, and so does `close()` (the app's `close_app`), which also ends the writer thread:
an app that is done can no longer write into a database that has moved on to other work.
Writes, erasures and operations never take this path: their AuditEvents are written inside the
write's own transaction (`AuditTrail.write`).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import and_, or_, select

from fhirserver import audit_rows, requestid
from fhirserver.model import dumps
from fhirserver.storage import Built, Repository, new_id, now_utc, resource, resource_compartment, stamp

log = logging.getLogger("fhirserver.audit")
MAX_ENTITIES = 100
_BATCH = 500  # AuditEvents per INSERT statement
MAX_QUEUED = 20_000  # events buffered in a process before requests write them themselves
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_REST = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
         "display": "RESTful Operation"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
# IHE Basic Audit Log Patterns: the X-Request-ID of the transaction, as an entity of the event
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


def tag_request(body: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """Add the request id entity to an AuditEvent body (once), so an operator can go from a log
    line or a client's X-Request-ID to the audit trail (`AuditEvent?entity-name=ID`)."""
    if not request_id or body.get("resourceType") != "AuditEvent":
        return body
    entities = body.setdefault("entity", [])
    if not any((e.get("type") or {}).get("code") == "XrequestId" for e in entities):
        entities.append({"what": {"identifier": {"value": request_id}}, "name": request_id,
                         "type": {"system": _BALP_ENTITY, "code": "XrequestId", "display": "X-Request-Id"}})
    return body


class AuditTrail:
    def __init__(self, repo: Repository, interval: float = 0.5, search: Any = None) -> None:
        self.repo = repo
        # the search engine whose indexer the repository runs: while its AuditEvent parameters
        # are the HL7 ones, the trail reads its events' index rows off their shape (audit_rows)
        self.search = search
        self.interval = interval
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = False

    def record(self, *, who: dict[str, Any], action: str, interaction: str, references: Iterable[str],
               query: str | None = None, remote: str | None = None, outcome: str = "0") -> None:
        """Queue one access (action C R U D E; interaction read, search-type, create ...)."""
        refs = list(dict.fromkeys(r for r in references if r))[:MAX_ENTITIES]
        self._queue.append({"who": who, "action": action, "interaction": interaction, "refs": refs,
                            "query": query, "remote": remote, "outcome": outcome,
                            "request_id": requestid.current(),
                            "recorded": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
        self._ensure_writer()
        self._bound()

    def _bound(self) -> None:
        """Keep the buffer bounded: a full batch wakes the writer early; past `MAX_QUEUED` (the
        writer cannot keep up, or the database is away) the request writes the backlog itself,
        so requests slow down rather than events pile up in memory or get dropped."""
        n = len(self._queue)
        if n >= _BATCH:
            self._wake.set()
        if n >= MAX_QUEUED:
            try:
                self.flush()
            except Exception:  # never fail the request that happened to fill the buffer
                log.exception("could not write audit events")

    def defer(self, build: Callable[[Any], list[dict[str, Any]]]) -> None:
        """Queue events built later, in the writer's transaction: `build(tx)` returns AuditEvent
        bodies (for callers such as DICOMweb that look up what a UID stands for)."""
        self._queue.append({"build": build, "request_id": requestid.current()})
        self._ensure_writer()

    def defer_batch(self, build_many: Callable[[list[Any], Any], list[list[dict[str, Any]]]], info: Any) -> None:
        """Queue `info`, built later with every other record queued with the same `build_many`:
        `build_many(infos, tx)` returns one list of AuditEvent bodies per info, in order. One
        call per flush, so the lookups of a whole batch (e.g. DICOMweb's study UIDs) are one
        statement instead of one per request."""
        self._queue.append({"batch": build_many, "info": info, "request_id": requestid.current()})
        self._ensure_writer()

    @staticmethod
    def write(tx: Any, bodies: Iterable[dict[str, Any]]) -> None:
        """Write AuditEvents now, inside the caller's transaction (an operation's record of what
        it changed commits or rolls back with the change)."""
        rid = requestid.current()
        for body in bodies:
            tx.create("AuditEvent", tag_request(body, rid))

    def _ensure_writer(self) -> None:
        if self._closed:  # no writer any more: a late record is written at once, never dropped
            self._write_late()
            return
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._closed:
                self._write_late()
                return
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked worker starts its own writer
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let auditing take the worker down; retried next round
                log.exception("could not write audit events")

    def _write_late(self) -> None:
        try:
            self.flush()
        except Exception:  # never fail the request whose record came after close
            log.exception("could not write audit events")

    def close(self, timeout: float = 10.0) -> None:
        """End the writer thread, then write what is still queued (idempotent). Later records
        are written by their own caller, so nothing recorded is lost."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("audit writer did not stop within %.0f s", timeout)
        atexit.unregister(self.flush)  # the exit hook would keep this trail (and its engine) alive
        self._write_late()  # after the join: the thread's last flush has committed

    def flush(self) -> int:
        """Write every queued record now (waiting for a write in flight); returns the count."""
        with self._flush_lock:
            items = []
            while self._queue:
                items.append(self._queue.popleft())
            if not items:
                return 0
            with self.repo.transaction(write=True) as tx:
                plain = [it for it in items if "build" not in it and "batch" not in it]
                owners = self._patients(tx.conn, {r for it in plain for r in it["refs"]})
                fast = tx.indexer is not None and self.search is not None and \
                    audit_rows.standard(self.search.registry)
                built = self._build_batches(items, tx)
                written = 0
                # built and written a batch at a time: one batch's objects die before the next is
                # built (a backlog never holds every event's rows at once, nor feeds the GC them)
                for start in range(0, len(items), _BATCH):
                    events = []  # (body, whether it has the trail's own shape)
                    for n, it in enumerate(items[start:start + _BATCH], start):
                        own = "build" not in it and "batch" not in it
                        if own:
                            bodies = [_event(it, owners)]
                        else:
                            bodies = built[n] if "batch" in it else it["build"](tx)
                        # the writer thread serves no request: the id queued with it
                        events.extend((tag_request(body, it.get("request_id")), own and fast) for body in bodies)
                    for first in range(0, len(events), _BATCH):
                        when = now_utc()
                        tx.insert_built("AuditEvent", when, [_built(tx, body, when, quick)
                                                             for body, quick in events[first:first + _BATCH]])
                    written += len(events)
            return written

    @staticmethod
    def _build_batches(items: list[dict[str, Any]], tx: Any) -> dict[int, list[dict[str, Any]]]:
        """The bodies of the `defer_batch` records, by position in `items`: one `build_many`
        call per builder."""
        groups: dict[Any, list[int]] = {}
        for n, it in enumerate(items):
            if "batch" in it:
                groups.setdefault(it["batch"], []).append(n)
        out: dict[int, list[dict[str, Any]]] = {}
        for build_many, positions in groups.items():
            for n, bodies in zip(positions, build_many([items[n]["info"] for n in positions], tx), strict=True):
                out[n] = bodies
        return out

    @staticmethod
    def _patients(conn: Any, refs: set[str]) -> dict[str, set[str]]:
        """Patient compartment owners of the referenced resources."""
        pairs = [r.split("/", 1) for r in refs if "/" in r]
        if not pairs:
            return {}
        by_type: dict[str, list[str]] = {}
        for t, i in pairs:
            by_type.setdefault(t, []).append(i)
        q = select(resource.c.res_type, resource.c.res_id, resource_compartment.c.comp_id).join(
            resource_compartment, resource_compartment.c.res_pk == resource.c.pk).where(
            resource_compartment.c.comp_type == "Patient",
            or_(*[and_(resource.c.res_type == t, resource.c.res_id.in_(ids)) for t, ids in by_type.items()]))
        out: dict[str, set[str]] = {}
        for t, i, owner in conn.execute(q):
            out.setdefault(f"{t}/{i}", set()).add(owner)
        return out


def _built(tx: Any, body: dict[str, Any], when: Any, fast: bool) -> Built:
    """One event's stamped text and index rows: read off the trail's own shape when `fast`
    (and the shape allows), else by the repository's indexer, as any create."""
    rid = new_id()
    stamped = stamp(body, rid, 1, when)
    rows = audit_rows.rows(stamped) if fast else None
    if rows is None:
        rows = tx.indexer("AuditEvent", stamped) if tx.indexer is not None else {}
    return rid, dumps(stamped).decode(), rows


def _event(it: dict[str, Any], owners: dict[str, set[str]]) -> dict[str, Any]:
    who = it["who"]
    agent: dict[str, Any] = {"requestor": True,
                             "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]}}
    if who.get("reference"):
        agent["who"] = {"reference": who["reference"]}
    else:
        agent["who"] = {"identifier": {"system": "urn:fhirserver:oauth-client", "value": who.get("client_id") or "?"}}
    if who.get("client_id"):
        agent["altId"] = who["client_id"]
    if it.get("remote"):
        agent["network"] = {"address": it["remote"], "type": "2"}
    patients = sorted({p for r in it["refs"] for p in owners.get(r, ())})
    entities = [{"what": {"reference": f"Patient/{p}"},
                 "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                 "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
                for p in patients]
    entities += [{"what": {"reference": r}} for r in it["refs"] if r.split("/", 1)[0] != "Patient" or
                 r.split("/", 1)[1] not in patients]
    if it.get("query"):
        entities.append({"what": {"display": "search"}, "description": it["query"][:1000]})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _REST,
        "subtype": [{"system": _INTERACTION, "code": it["interaction"]}],
        "action": it["action"], "recorded": it["recorded"], "outcome": it["outcome"],
        "agent": [agent], "source": {"observer": {"display": "fhirserver"}},
    }
    if entities:
        event["entity"] = entities
    return event
