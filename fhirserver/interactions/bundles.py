"""Batch and transaction Bundles (R4 http.html#transaction).

A transaction runs in one database transaction: ids are assigned first, `urn:uuid:` and
conditional references are rewritten, entries run in the spec's order (DELETE, POST, PUT/PATCH,
GET/HEAD), and any failure rolls the whole Bundle back. Batch entries run each in their own
transaction and fail alone.

A Bundle whose `identifier` is in `BATCH_ID_SYSTEM` is applied at most once: its value is recorded
in the same database transaction as the entries (per entry for a batch), so a client that lost
the answer can send it again and get 409 `duplicate` instead of a second copy of the data.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import uuid
from typing import Any, Iterator
from urllib.parse import parse_qsl

from fhirserver.errors import FhirError, Issue, outcome
from fhirserver.interactions import transact
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse, http_date
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.limits import BundleBudget, client_fault
from fhirserver.interactions.requests import parse_url
from fhirserver.interactions.router import dispatch
from fhirserver.model import R4_RESOURCE_TYPES, Raw, is_valid_id, loads
from fhirserver.storage import BATCH_ID_SYSTEM, MAX_BATCH_KEY, Repository, Tx, claim_batch

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclasses.dataclass
class _Entry:
    index: int
    full_url: str | None
    request: FhirRequest
    prefer: str


def _entry_error(index: int, exc: FhirError) -> FhirError:
    issues = [Issue(i.severity, i.code, f"Bundle.entry[{index}]: {i.diagnostics}",
                    i.expression and f"Bundle.entry[{index}].resource.{i.expression.split('.', 1)[-1]}")
              for i in exc.issues]
    return FhirError(exc.status, issues, headers=exc.headers)


def to_request(entry: dict[str, Any], index: int, base: str) -> _Entry:
    """Turn one Bundle entry into an interaction request."""
    req = entry.get("request")
    if not isinstance(req, dict) or not req.get("method") or not req.get("url"):
        raise FhirError(400, f"Bundle.entry[{index}] has no request.method and request.url", "required")
    method = str(req["method"]).upper()
    if method not in _ORDER:
        raise FhirError(400, f"Bundle.entry[{index}].request.method '{method}' is not an HTTP verb of FHIR")
    try:
        fr = parse_url(method, str(req["url"]), base)
    except FhirError as exc:
        raise _entry_error(index, exc) from None
    for key, header in (("ifMatch", "if-match"), ("ifNoneMatch", "if-none-match"),
                        ("ifNoneExist", "if-none-exist"), ("ifModifiedSince", "if-modified-since")):
        if req.get(key):
            fr.headers[header] = str(req[key])
    resource = entry.get("resource")
    if method == "PATCH" and isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            fr.body, fr.body_kind = loads(base64.b64decode(resource.get("data", ""))), "json-patch"
        except (ValueError, TypeError):
            raise FhirError(400, f"Bundle.entry[{index}]: the Binary does not hold a JSON Patch") from None
    else:
        fr.body = resource
    return _Entry(index, entry.get("fullUrl"), fr, "")


def _response_entry(resp: FhirResponse, prefer: str) -> dict[str, Any]:
    status_text = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}
    r: dict[str, Any] = {"status": status_text.get(resp.status, str(resp.status))}
    if resp.location:
        r["location"] = resp.location
    if resp.stored is not None:
        r["etag"] = resp.stored.etag
        r["lastModified"] = resp.stored.last_updated.isoformat(timespec="milliseconds")
    out: dict[str, Any] = {}
    if resp.stored is not None and not resp.stored.deleted:
        out["fullUrl"] = ""  # filled by the caller with the base
    if resp.body is not None and resp.status != 304 and prefer != "minimal":
        out["resource"] = Raw(resp.body) if isinstance(resp.body, str) else resp.body
    if prefer == "operationoutcome" and resp.outcome:
        r["outcome"] = resp.outcome
    out["response"] = r
    return out


def _walk_references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _walk_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_references(item)


def _prefer_return(headers: dict[str, str]) -> str:
    for part in (headers.get("prefer") or "").lower().replace(" ", "").split(";"):
        for p in part.split(","):
            if p.startswith("return="):
                return p[len("return="):]
    return "representation"


def process(ctx: Context, repo: Repository, bundle: Any, headers: dict[str, str],
            budget: BundleBudget | None = None) -> dict[str, Any]:
    """Run a batch or transaction Bundle; returns the response Bundle (raises for a failed transaction)."""
    budget = budget or BundleBudget()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "POST to the base URL takes a batch or transaction Bundle", "invalid")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise FhirError(400, f"Bundle.type must be batch or transaction, not '{kind}'", "invalid")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise FhirError(400, "Bundle.entry must be an array", "structure")
    budget.check_entries(len(raw_entries))
    prefer = _prefer_return(headers)
    batch_id = _batch_id(bundle.get("identifier"))
    if kind == "transaction":
        out = _transaction(ctx, repo, raw_entries, prefer, batch_id, budget)
    else:
        out = _batch(ctx, repo, raw_entries, prefer, batch_id, budget)
    if len(raw_entries) >= BULK_ENTRIES:
        # bulk ingest (`fhirserver load`, Synthea): keep the planner's statistics in step
        repo.analyze(only_stale=True, written=len(raw_entries))
    return out


# A Bundle this large is bulk ingest: after it, the search tables' statistics are checked.
BULK_ENTRIES = 200


def _batch_id(identifier: Any) -> str | None:
    """The at-most-once key of a Bundle, if its identifier is in BATCH_ID_SYSTEM."""
    if not isinstance(identifier, dict) or identifier.get("system") != BATCH_ID_SYSTEM:
        return None
    value = identifier.get("value")
    if not isinstance(value, str) or not value.strip():
        raise FhirError(400, f"Bundle.identifier in {BATCH_ID_SYSTEM} needs a value", "required")
    if len(value) > MAX_BATCH_KEY - 12:  # room for "#<entry index>"
        raise FhirError(400, f"Bundle.identifier.value in {BATCH_ID_SYSTEM} is longer than "
                        f"{MAX_BATCH_KEY - 12} characters", "too-long")
    return value


def _claim(tx: Tx, key: str, what: str) -> None:
    """Record the key in this transaction, or refuse: the same work was committed before."""
    when = claim_batch(tx, key)
    if when is not None:
        raise FhirError(409, f"{what} ({BATCH_ID_SYSTEM}|{key}) was already committed at "
                        f"{when.isoformat(timespec='seconds')}; it was not applied again", "duplicate")


def _batch(ctx: Context, repo: Repository, raw_entries: list, prefer: str,
           batch_id: str | None, budget: BundleBudget) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(raw_entries):
        try:
            budget.check_time(i)
            entry = to_request(raw if isinstance(raw, dict) else {}, i, ctx.base)
            write = transact.writes(entry.request, ctx.operations)
            claim = f"{batch_id}#{i}" if batch_id is not None and write else None
            resp = transact.run(repo, functools.partial(_batch_entry, ctx, entry.request, claim, i), write=write)
            out.append(_finish(ctx, _response_entry(resp, prefer), resp))
        except Exception as exc:  # noqa: BLE001 - an entry fails alone, unless it is a bug
            fault = exc if isinstance(exc, FhirError) else client_fault(exc)
            if fault is None:
                raise
            out.append({"response": {"status": str(fault.status), "outcome": outcome(fault.issues)}})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


def _finish(ctx: Context, item: dict[str, Any], resp: FhirResponse) -> dict[str, Any]:
    if "fullUrl" in item:
        if resp.stored is not None:
            item["fullUrl"] = f"{ctx.base}/{resp.stored.res_type}/{resp.stored.res_id}"
        else:
            del item["fullUrl"]
    return item


def _batch_entry(ctx: Context, req: FhirRequest, claim: str | None, index: int, tx: Tx) -> FhirResponse:
    if claim is not None:
        _claim(tx, claim, f"Bundle.entry[{index}] of this batch")
    return dispatch(ctx, tx, req)


def _transaction(ctx: Context, repo: Repository, raw_entries: list, prefer: str,
                 batch_id: str | None, budget: BundleBudget) -> dict[str, Any]:
    """The whole Bundle in one transaction, run again from the raw entries after a conflict
    (the references a failed attempt rewrote in place are put back first)."""
    rewritten: list[tuple[dict[str, Any], str]] = []

    def attempt(tx: Tx) -> dict[str, Any]:
        while rewritten:
            ref, value = rewritten.pop()
            ref["reference"] = value
        if batch_id is not None:  # first: a concurrent copy of this Bundle waits here, not midway
            _claim(tx, batch_id, "This transaction")
        return _run_transaction(ctx, tx, raw_entries, prefer, rewritten, budget)

    return transact.run(repo, attempt, write=True)


def _run_transaction(ctx: Context, tx: Tx, raw_entries: list, prefer: str,
                     rewritten: list[tuple[dict[str, Any], str]], budget: BundleBudget) -> dict[str, Any]:
    entries = [to_request(raw if isinstance(raw, dict) else {}, i, ctx.base)
               for i, raw in enumerate(raw_entries)]
    results: dict[int, dict[str, Any]] = {}
    # Locks in one canonical order before any entry runs: conditional criteria, then the rows
    # the entries will write. Two Bundles over the same resources then queue, not deadlock.
    tx.lock_all_criteria(_conditional_criteria(entries))
    written: set[tuple[str, str]] = set()
    mapping = _assign_identities(ctx, tx, entries, written)
    tx.lock_rows(sorted(written))
    for e in entries:
        if e.request.body is not None and e.request.body_kind == "resource":
            try:
                _rewrite_references(ctx, tx, e.request.body, mapping, rewritten)
            except FhirError as exc:
                raise _entry_error(e.index, exc) from None
    for e in sorted(entries, key=lambda x: (_ORDER[x.request.method], x.index)):
        try:
            budget.check_time(e.index)
            resp = dispatch(ctx, tx, e.request)
        except FhirError as exc:
            raise _entry_error(e.index, exc) from None
        results[e.index] = _finish(ctx, _response_entry(resp, prefer), resp)
    return {"resourceType": "Bundle", "type": "transaction-response",
            "entry": [results[i] for i in range(len(entries))]}


def _conditional_criteria(entries: list[_Entry]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(type, params) of every conditional entry: ifNoneExist, and PUT/PATCH/DELETE Type?query."""
    out = []
    for e in entries:
        r = e.request
        if not r.res_type or r.res_type not in R4_RESOURCE_TYPES or r.res_id or r.operation or r.compartment:
            continue
        cond = r.header("if-none-exist") if r.method == "POST" else None
        if cond:
            out.append((r.res_type, parse_qsl(cond.split("?", 1)[-1], keep_blank_values=True)))
        elif r.method in ("PUT", "PATCH", "DELETE") and r.params:
            out.append((r.res_type, r.params))
    return out


def _assign_identities(ctx: Context, tx: Tx, entries: list[_Entry],
                       written: set[tuple[str, str]]) -> dict[str, str]:
    """Map each entry's fullUrl to the Type/id it will have once the transaction is done;
    adds to `written` the existing resources that entries will change (to lock them)."""
    mapping: dict[str, str] = {}
    seen_targets: set[str] = set()
    for e in entries:
        r = e.request
        target = None
        if r.compartment is not None:  # a compartment is only searched: the router refuses the rest
            continue
        try:
            if r.method == "POST" and r.res_type and r.res_id is None and not r.operation:
                cond = r.header("if-none-exist")
                matches = find_matches(ctx, tx, r.res_type, cond.split("?", 1)[-1]) if cond else []
                if len(matches) == 1:
                    target = f"{r.res_type}/{matches[0].res_id}"
                elif not matches:
                    r.assigned_id = str(uuid.uuid4())
                    target = f"{r.res_type}/{r.assigned_id}"
            elif r.method == "PUT" and r.res_type and r.res_id:
                target = f"{r.res_type}/{r.res_id}"
            elif r.method == "PUT" and r.res_type and r.res_id is None:
                matches = find_matches(ctx, tx, r.res_type, r.params)
                if len(matches) == 1:
                    target = f"{r.res_type}/{matches[0].res_id}"
                    written.add((r.res_type, matches[0].res_id))
                elif not matches:
                    body_id = r.body.get("id") if isinstance(r.body, dict) else None
                    r.assigned_id = body_id if is_valid_id(body_id) else str(uuid.uuid4())
                    target = f"{r.res_type}/{r.assigned_id}"
        except FhirError as exc:
            raise _entry_error(e.index, exc) from None
        if r.method in ("PUT", "PATCH", "DELETE") and r.res_type and r.res_id and not r.operation:
            written.add((r.res_type, r.res_id))
        if target and r.method in ("PUT", "POST") and r.res_id is None and target in seen_targets:
            raise FhirError(400, f"Bundle.entry[{e.index}]: two entries of this transaction resolve to "
                            f"{target}", "duplicate")
        if target:
            seen_targets.add(target)
        if e.full_url and target:
            mapping[e.full_url] = target
    return mapping


def _rewrite_references(ctx: Context, tx: Tx, resource: Any, mapping: dict[str, str],
                        rewritten: list[tuple[dict[str, Any], str]]) -> None:
    """Rewrite in place; `rewritten` keeps each original value, for a retry to put back."""
    for ref in _walk_references(resource):
        value = ref["reference"]
        if value in mapping:
            rewritten.append((ref, value))
            ref["reference"] = mapping[value]
        elif value.startswith("urn:uuid:") or value.startswith("urn:oid:"):
            raise FhirError(400, f"Reference '{value}' names no entry of this transaction", "not-found")
        elif "?" in value and value.split("?", 1)[0] in R4_RESOURCE_TYPES:
            res_type, query = value.split("?", 1)
            matches = find_matches(ctx, tx, res_type, query, lock=False)  # a read: nothing to serialize
            if len(matches) != 1:
                raise FhirError(412 if matches else 404,
                                f"Conditional reference '{value}' matches {len(matches)} resources "
                                "(exactly one is required)", "multiple-matches" if matches else "not-found")
            rewritten.append((ref, value))
            ref["reference"] = f"{res_type}/{matches[0].res_id}"


__all__ = ["process", "http_date"]
