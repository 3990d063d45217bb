"""Bulk Data Access IG 2.0 `$export` (system, Patient and Group level), run on the job queue.

The kick-off records a `bulk_export` row and its job in one transaction and answers at once;
the job (running as the requester's own policy, rebuilt when it runs) writes one NDJSON file per
resource type to the services' blob store (content-addressed: the manifest keeps each file's
key; a blob is deleted with the last export naming it), reading the database in primary-key order in bounded batches,
so memory stays flat whatever the size. Every query carries the requester's row filter and goes
through the search compiler for `_typeFilter`, exactly as a REST search would: an export never
holds more than the same client could page through with searches.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import and_, delete, exists, false, or_, select, update

from fhirserver.access import SystemJob
from fhirserver.errors import FhirError
from fhirserver.blobs import BlobStore
from fhirserver.jobs import Cancelled, Permanent
from fhirserver.model import R4_RESOURCE_TYPES, reference_id
from fhirserver.operations.export_tables import bulk_export
from fhirserver.search import SearchError, compartment_params
from fhirserver.storage import resource, resource_compartment

EXPORT_JOB = "bulk.export"
EXPIRE_JOB = "bulk.expire"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
BATCH = 2000                     # rows per keyset page
PROGRESS_SECONDS = 1.0           # how often a running export reports progress (and sees a cancel)
ACCEPTED, RUNNING, COMPLETED, FAILED, CANCELLED = "accepted", "running", "completed", "failed", "cancelled"


def _bad(msg: str, code: str = "invalid") -> FhirError:
    return FhirError(400, msg, code)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    level: str                                   # system | patient | group
    group_id: str | None = None
    types: tuple[str, ...] = ()                  # empty: every type the caller may read
    since: str | None = None                     # FHIR instant
    type_filters: tuple[tuple[str, str], ...] = ()  # (type, query string)
    patients: tuple[str, ...] = ()               # POST `patient` (Patient and Group level)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ExportRequest":
        return cls(level=d["level"], group_id=d.get("group_id"), types=tuple(d.get("types") or ()),
                   since=d.get("since"), type_filters=tuple(tuple(x) for x in d.get("type_filters") or ()),
                   patients=tuple(d.get("patients") or ()))


def _instant(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"_since must be a FHIR instant (e.g. 2024-01-01T00:00:00Z), not '{value}'") from None
    if t.tzinfo is None:
        raise _bad(f"_since must carry a time zone: '{value}'")
    return t.astimezone(timezone.utc)


def _parameters(body: Any) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters resource as (name, value) pairs."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _bad("A POST $export takes a Parameters resource")
    out = []
    for p in body.get("parameter") or []:
        name = p.get("name")
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        if isinstance(value, dict) and "reference" in value:
            value = value["reference"]
        if not isinstance(name, str) or not isinstance(value, str):
            raise _bad(f"$export parameter {name!r} needs a string, instant or Reference value")
        out.append((name, value))
    return out


def parse_request(level: str, group_id: str | None, query: Sequence[tuple[str, str]], body: Any,
                  *, lenient: bool, base: str) -> ExportRequest:
    """Validate the kick-off parameters (400 for anything the IG says to refuse)."""
    params = list(query) + _parameters(body)
    types: list[str] = []
    since, filters, patients = None, [], []
    for name, value in params:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise _bad(f"_outputFormat '{value}' is not supported: use application/fhir+ndjson", "not-supported")
        elif name == "_type":
            for t in (x.strip() for x in value.split(",")):
                if t not in R4_RESOURCE_TYPES:
                    raise _bad(f"_type names an unknown resource type '{t}'", "not-supported")
                if t not in types:
                    types.append(t)
        elif name == "_since":
            _instant(value)
            since = value
        elif name == "_typeFilter":
            for item in value.split(","):
                t, sep, q = item.partition("?")
                if t not in R4_RESOURCE_TYPES or not sep or not q:
                    raise _bad(f"_typeFilter must be Type?search-params, not '{item}'")
                filters.append((t, q))
        elif name == "patient" and level != "system":
            pid = reference_id(value, "Patient", base)
            if not pid:
                raise _bad(f"patient must reference a Patient, not '{value}'")
            patients.append(pid)
        elif name in ("_format",):
            continue
        elif not lenient:
            raise _bad(f"$export does not support the parameter '{name}' (send Prefer: handling=lenient to ignore it)",
                       "not-supported")
    if level != "system":
        allowed = set(compartment_params().get("Patient", {})) | {"Patient"}
        bad = [t for t in types if t not in allowed]
        if bad:
            raise _bad(f"{', '.join(bad)} is not in the Patient compartment: a {level}-level export cannot include it")
    return ExportRequest(level, group_id, tuple(types), since, tuple(filters), tuple(patients))


def owner_of(principal: Any, access: Any) -> str:
    """Who may poll, cancel and download: the requesting client and user (or the named job)."""
    if principal is None:
        return f"system:{getattr(access, 'name', '?')}"
    return f"client:{principal.client_id}|user:{principal.user_pk or ''}"


def blobs(services: Any) -> BlobStore:
    return services.blobs


def _keys(output: Any) -> set[str]:
    """The blob keys an export's stored manifest names."""
    if not output:
        return set()
    out = orjson.loads(output)
    return {i["key"] for i in out.get("output", []) + out.get("error", []) if i.get("key")}


def release(services: Any, export_id: str, keys: set[str]) -> None:
    """Delete an export's blobs, except those another export names too (the same bytes, e.g.
    the same data exported twice, are one blob)."""
    if not keys:
        return
    with services.repo.engine.connect() as c:
        others = c.execute(select(bulk_export.c.output).where(bulk_export.c.id != export_id,
                                                             bulk_export.c.output.isnot(None))).scalars().all()
    used = set().union(*(_keys(o) for o in others)) if others else set()
    store = blobs(services)
    for key in sorted(keys - used):
        store.delete(key)


def _compiled_filters(services: Any, access: Any, req: ExportRequest) -> dict[str, list[Any]]:
    """_typeFilter compiled by the search compiler (with the caller's row filter for chains)."""
    compiler = services.search.compiler(postgres=services.repo.postgres, access=access.row_filter)
    out: dict[str, list[Any]] = {}
    for t, q in req.type_filters:
        try:
            compiled = compiler.compile(t, parse_qsl(q, keep_blank_values=True), strict=True)
        except SearchError as exc:
            raise _bad(f"_typeFilter {t}?{q}: {exc}") from None
        out.setdefault(t, []).append(and_(*compiled.where) if compiled.where else resource.c.pk.isnot(None))
    return out


def _group_members(tx: Any, access: Any, group_id: str, base: str) -> list[str]:
    row = tx.current("Group", group_id, where=list(access.row_filter("Group")))
    if row is None or row.deleted or row.body is None:
        raise FhirError(404, f"Group/{group_id} is not known", "not-found")
    body = orjson.loads(row.body)
    members = []
    for m in body.get("member") or []:
        pid = reference_id((m.get("entity") or {}), "Patient", base)
        if pid and not m.get("inactive"):
            members.append(pid)
    return sorted(set(members))


def kick_off(services: Any, access: Any, principal: Any, req: ExportRequest, request_url: str) -> str:
    """Check access, record the export and its job in one transaction; returns the export id."""
    access.check_operation("$export", "Group" if req.level == "group" else "Patient" if req.level == "patient" else None)
    _compiled_filters(services, access, req)  # refuse a bad _typeFilter now, not in the job
    export_id = uuid.uuid4().hex
    t = _now_ms()
    with services.repo.transaction(write=True) as tx:
        if req.level == "group":
            _group_members(tx, access, req.group_id or "", services.fhir_base())
        tx.conn.execute(bulk_export.insert().values(
            id=export_id, owner=owner_of(principal, access), level=req.level, group_id=req.group_id,
            params=orjson.dumps(req.as_json()).decode(), request=request_url, state=ACCEPTED,
            created=t, expires=t + services.settings.export_seconds * 1000))
        as_ = principal if principal is not None else access
        if not isinstance(as_, SystemJob) and principal is None:
            raise FhirError(403, "An export runs for an authenticated client", "forbidden")
        job_pk = services.jobs.enqueue(tx, EXPORT_JOB, {"export": export_id}, as_=as_, max_attempts=3)
        tx.conn.execute(update(bulk_export).where(bulk_export.c.id == export_id).values(job_pk=job_pk))
    return export_id


def find(services: Any, export_id: str, owner: str) -> dict[str, Any] | None:
    """The export if it exists, is the caller's and has not expired."""
    with services.repo.engine.connect() as c:
        row = c.execute(select(bulk_export).where(bulk_export.c.id == export_id)).mappings().first()
    if row is None or row["owner"] != owner or row["expires"] < _now_ms() or row["state"] == CANCELLED:
        return None
    return dict(row)


def manifest(services: Any, row: dict[str, Any]) -> dict[str, Any]:
    out = orjson.loads(row["output"] or b'{"output": [], "error": []}')
    base = services.fhir_base()

    def entries(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"type": i["type"], "url": f"{base}/$export-file/{row['id']}/{i['file']}", "count": i["count"]}
                for i in items]
    return {"transactionTime": row["transaction_time"], "request": row["request"], "requiresAccessToken": True,
            "output": entries(out["output"]), "error": entries(out["error"])}


def cancel(services: Any, row: dict[str, Any]) -> None:
    """DELETE on the status URL: stop the job, forget the export, remove its files."""
    with services.repo.transaction(write=True) as tx:
        tx.conn.execute(update(bulk_export).where(bulk_export.c.id == row["id"]).values(state=CANCELLED))
        if row["job_pk"] is not None:
            services.jobs.cancel(tx, row["job_pk"])
        services.jobs.enqueue(tx, EXPIRE_JOB, {"export": row["id"]}, as_=SystemJob("export-cleanup"),
                              dedupe_key=f"export-cancel:{row['id']}")
        keys = _keys(row.get("output"))
        tx.on_commit.append(lambda: release(services, row["id"], keys))


def file_known(row: dict[str, Any], name: str) -> dict[str, Any] | None:
    if row["state"] != COMPLETED or not row["output"]:
        return None
    out = orjson.loads(row["output"])
    return next((i for i in out["output"] + out["error"] if i["file"] == name), None)


# -- the jobs --------------------------------------------------------------------------------
def _types_to_export(conn: Any, req: ExportRequest) -> list[str]:
    if req.types:
        return list(req.types)
    present = sorted(conn.execute(select(resource.c.res_type).where(resource.c.deleted.is_(False)).distinct()).scalars())
    if req.level == "system":
        return present
    allowed = set(compartment_params().get("Patient", {})) | {"Patient"}
    return [t for t in present if t in allowed]


def _scope(req: ExportRequest, res_type: str, members: list[str] | None) -> list[Any]:
    """Patient and Group level: the resources of the patients' compartments only."""
    if req.level == "system":
        return []
    ids = members if members is not None else (list(req.patients) or None)
    if members is not None and req.patients:
        ids = sorted(set(members) & set(req.patients))
    if ids is not None and not ids:
        return [false()]
    rc = resource_compartment.alias()
    member = exists().where(rc.c.res_pk == resource.c.pk, rc.c.comp_type == "Patient",
                            *([rc.c.comp_id.in_(ids)] if ids is not None else []))
    if res_type == "Patient":
        return [resource.c.res_id.in_(ids)] if ids is not None else []
    return [member]


def _lines(services: Any, where: list[Any], counter: list[int], tick: Any) -> Iterator[bytes]:
    """NDJSON of the matching current versions, in pk order, a bounded batch at a time."""
    last = 0
    engine = services.repo.engine
    while True:
        q = (select(resource.c.pk, resource.c.body).where(*where, resource.c.pk > last)
             .order_by(resource.c.pk).limit(BATCH))
        with engine.connect() as c:
            rows = c.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        counter[0] += len(rows)
        parts = [b if isinstance(b, (bytes, str)) else orjson.dumps(b) for _, b in rows]
        yield b"".join((p.encode() if isinstance(p, str) else p) + b"\n" for p in parts)
        tick()


def run_export(ctx: Any) -> None:
    """Job `bulk.export`: write the files and the manifest of one export."""
    services, access = ctx.services, ctx.access
    export_id = ctx.payload["export"]
    store = blobs(services)
    with services.repo.engine.connect() as c:
        row = c.execute(select(bulk_export).where(bulk_export.c.id == export_id)).mappings().first()
    if row is None or row["state"] in (CANCELLED, COMPLETED):
        return
    req = ExportRequest.from_json(orjson.loads(row["params"]))
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with services.repo.engine.begin() as c:
        c.execute(update(bulk_export).where(bulk_export.c.id == export_id).values(
            state=RUNNING, transaction_time=started, progress="starting"))
    written: set[str] = set()  # this attempt's blobs, released if it does not complete
    try:
        output, errors = _export_all(ctx, services, access, req, export_id, store, written)
    except (Cancelled, Permanent):
        release(services, export_id, written)
        raise
    except Exception as exc:
        release(services, export_id, written)
        if ctx.job.attempts >= ctx.job.max_attempts:
            with services.repo.engine.begin() as c:
                c.execute(update(bulk_export).where(bulk_export.c.id == export_id).values(
                    state=FAILED, error_text=f"{type(exc).__name__}: {exc}"[:2000]))
        raise
    with services.repo.transaction(write=True) as tx:
        done = tx.conn.execute(update(bulk_export).where(bulk_export.c.id == export_id,
                                                         bulk_export.c.state == RUNNING).values(
            state=COMPLETED, progress="completed",
            output=orjson.dumps({"output": output, "error": errors}).decode())).rowcount
        services.jobs.enqueue(tx, EXPIRE_JOB, {"export": export_id}, as_=SystemJob("export-cleanup"),
                              run_at_ms=row["expires"], dedupe_key=f"export-expire:{export_id}")
    if not done:  # cancelled while the last file was written
        release(services, export_id, written)


def _export_all(ctx: Any, services: Any, access: Any, req: ExportRequest, export_id: str,
                store: BlobStore, written: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    filters = _compiled_filters(services, access, req)
    members = None
    with services.repo.transaction() as tx:
        if req.level == "group":
            members = _group_members(tx, access, req.group_id or "", services.fhir_base())
        types = _types_to_export(tx.conn, req)
    since = _instant(req.since) if req.since else None
    output: list[dict[str, Any]] = []
    problems: list[str] = []
    total = [0]
    last_report = [time.monotonic()]

    def tick(res_type: str) -> None:
        ctx.check()
        if time.monotonic() - last_report[0] < PROGRESS_SECONDS:
            return
        last_report[0] = time.monotonic()
        with services.repo.engine.begin() as c:
            alive = c.execute(update(bulk_export).where(bulk_export.c.id == export_id, bulk_export.c.state == RUNNING)
                              .values(progress=f"{res_type}: {total[0]} resources so far")).rowcount
        if not alive:
            raise Cancelled()

    for res_type in types:
        try:
            access.check_interaction("search", res_type)
        except FhirError as exc:
            if req.types:  # asked for by name: say why it is missing; otherwise leave it out
                problems.append(f"{res_type} was not exported: {exc}")
            continue
        where = [resource.c.res_type == res_type, resource.c.deleted.is_(False),
                 *access.row_filter(res_type), *_scope(req, res_type, members)]
        if since is not None:
            where.append(resource.c.last_updated > since)
        if res_type in filters:
            where.append(or_(*filters[res_type]))
        counter = [0]
        name = f"{res_type}.ndjson"
        before = total[0]

        def counted(n: list[int] = counter) -> None:
            total[0] = before + n[0]
            tick(res_type)
        key, _size = store.put(_lines(services, where, counter, counted))
        written.add(key)
        if counter[0]:
            output.append({"type": res_type, "file": name, "count": counter[0], "key": key})
    errors = []
    if problems:
        lines = b"".join(orjson.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "forbidden", "diagnostics": p}]}) + b"\n" for p in problems)
        key, _size = store.put([lines])
        written.add(key)
        errors.append({"type": "OperationOutcome", "file": "errors.ndjson", "count": len(problems), "key": key})
    return output, errors


def expire_export(ctx: Any) -> None:
    """Job `bulk.expire`: remove an expired or cancelled export's files and row."""
    services = ctx.services
    export_id = ctx.payload["export"]
    with services.repo.engine.connect() as c:
        row = c.execute(select(bulk_export).where(bulk_export.c.id == export_id)).mappings().first()
    if row is not None and row["state"] != CANCELLED and row["expires"] > _now_ms():
        raise Permanent("not expired yet")  # pragma: no cover - scheduled at `expires`
    with services.repo.engine.begin() as c:  # the row first: `release` keeps blobs others name
        c.execute(delete(bulk_export).where(bulk_export.c.id == export_id))
    release(services, export_id, _keys(row["output"]) if row is not None else set())


def install(services: Any) -> None:
    """Register the export jobs (app factory)."""
    services.jobs.register(EXPORT_JOB, run_export, max_attempts=3, backoff_seconds=5.0, lease_seconds=60.0)
    services.jobs.register(EXPIRE_JOB, expire_export, max_attempts=5, backoff_seconds=60.0)


__all__ = ["EXPORT_JOB", "EXPIRE_JOB", "ExportRequest", "cancel", "file_known", "find",
           "install", "kick_off", "manifest", "owner_of", "parse_request", "run_export"]
