"""The FHIR interactions as small handlers over one storage transaction.

Each handler takes a `FhirRequest` (already parsed from HTTP or from a Bundle entry) and returns a
`FhirResponse`; the HTTP layer and the batch/transaction processor both call `router.dispatch`,
so a Bundle entry behaves exactly like the same request sent alone.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from fhirserver.errors import FhirError, bad_request, info, not_found
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse, http_date
from fhirserver.interactions.search import page_url, run_search
from fhirserver.model import patch as patching
from fhirserver.model.jsonio import Raw, loads
from fhirserver.model.types import NOT_STORABLE, R4_RESOURCE_TYPES
from fhirserver.model.integers import parse_count
from fhirserver.model.validate import InvalidResource, is_valid_id, validate_resource
from fhirserver.search import SearchError, date_range
from fhirserver.search.dates import split_prefix
from fhirserver.storage import Stored, Tx, VersionConflict


_ETAG_RE = re.compile(r'^(?:W/)?"?([^"]+)"?$')


def parse_etag(value: str) -> int:
    m = _ETAG_RE.match(value.strip())
    version = parse_count(m.group(1)) if m else None
    if version is None:
        raise bad_request(f"'{value}' is not a version ETag (expected W/\"<versionId>\")")
    return version


def check_type(res_type: str | None) -> str:
    if not res_type or res_type not in R4_RESOURCE_TYPES:
        raise FhirError(404, f"Unknown resource type '{res_type}'", "not-supported")
    return res_type


def check_id(res_id: str | None) -> str:
    if not is_valid_id(res_id):
        raise bad_request(f"'{res_id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")
    return res_id  # type: ignore[return-value]


def _stored_response(status: int, stored: Stored, base: str, with_location: bool = False) -> FhirResponse:
    loc = f"{base}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}" if with_location else None
    return FhirResponse(status, stored.body, stored, loc)


def _validated(body: Any, res_type: str) -> dict[str, Any]:
    if body is None:
        raise bad_request("A resource body is required")
    if res_type in NOT_STORABLE:
        raise FhirError(405, f"{res_type} resources are not stored", "not-supported")
    try:
        return validate_resource(body, res_type)
    except InvalidResource as exc:
        raise FhirError(exc.status, exc.issues) from None


def _strict(req: FhirRequest) -> bool:
    prefer = (req.header("prefer") or "").replace(" ", "").lower()
    return "handling=strict" in prefer


def find_matches(ctx: Context, tx: Tx, res_type: str, query: str | list[tuple[str, str]],
                 limit: int = 2, lock: bool = True) -> list[Stored]:
    """Resources matching a conditional query (`identifier=...`); unknown parameters are errors.

    `lock`: hold the criteria's lock until commit (storage.locks), so that of concurrent
    conditional writes with the same criteria the later ones see what the first one wrote."""
    params = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
    params = [(k, v) for k, v in params if not k.startswith("_format")]
    if not params:
        raise bad_request("A conditional interaction needs search parameters")
    try:
        compiled = ctx.search.compile(res_type, params, postgres=ctx.postgres, strict=True,
                                      access=ctx.access.row_filter)
    except SearchError as exc:
        raise FhirError(400, str(exc), "not-supported") from None
    where = [*compiled.where, *ctx.access.row_filter(res_type)]
    if lock:
        tx.lock_criteria(res_type, params)
    rows, _total, _more, _cursors = tx.search(res_type, where, count=limit, with_total=False)
    return rows


# -- read ------------------------------------------------------------------------------------
def _visible(ctx: Context, tx: Tx, res_type: str, res_id: str, for_update: bool = False) -> Stored | None:
    """The current row if it exists and the caller may see it (else None: no existence leak)."""
    return tx.current(res_type, res_id, for_update=for_update, where=ctx.access.row_filter(res_type))


def read(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type, res_id = check_type(req.res_type), check_id(req.res_id)
    ctx.access.check_interaction("read", res_type)
    cur = _visible(ctx, tx, res_type, res_id)
    if cur is None:
        raise not_found(res_type, res_id)
    if cur.deleted:
        raise FhirError(410, f"Resource {res_type}/{res_id} was deleted", "deleted",
                        headers={"ETag": cur.etag, "Last-Modified": http_date(cur.last_updated)})
    return _conditional_read(req, FhirResponse(200, cur.body, cur))


def vread(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type, res_id = check_type(req.res_type), check_id(req.res_id)
    ctx.access.check_interaction("vread", res_type)
    version = parse_count(req.version_id)
    if version is None:
        raise not_found(res_type, f"{res_id}/_history/{req.version_id}")
    if _visible(ctx, tx, res_type, res_id) is None:
        raise not_found(res_type, res_id)
    ver = tx.version(res_type, res_id, version)
    if ver is None:
        raise FhirError(404, f"Version {req.version_id} of {res_type}/{res_id} is not known", "not-found")
    if ver.deleted:
        raise FhirError(410, f"Version {req.version_id} of {res_type}/{res_id} is a deletion", "deleted")
    return _conditional_read(req, FhirResponse(200, ver.body, ver))


def _conditional_read(req: FhirRequest, resp: FhirResponse) -> FhirResponse:
    stored = resp.stored
    assert stored is not None
    inm = req.header("if-none-match")
    if inm:
        tags = [t.strip() for t in inm.split(",")]
        if "*" in tags or any(_same_version(t, stored.version_id) for t in tags):
            return FhirResponse(304, None, stored)
    ims = req.header("if-modified-since")
    if ims and not inm:
        since = _parse_http_or_fhir_date(ims)
        if since is not None and stored.last_updated.replace(microsecond=0) <= since:
            return FhirResponse(304, None, stored)
    return resp


def _same_version(tag: str, vid: int) -> bool:
    try:
        return parse_etag(tag) == vid
    except FhirError:
        return False


def _parse_http_or_fhir_date(value: str) -> datetime | None:
    try:
        t = parsedate_to_datetime(value)
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        pass
    try:
        return date_range(value)[0]
    except ValueError:
        return None


# -- create / update / patch / delete -----------------------------------------------------------
def create(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("create", res_type)
    body = _validated(req.body, res_type)
    ctx.access.check_write(res_type, body)
    body = ctx.access.owned(res_type, body)
    cond = req.header("if-none-exist")
    if cond:
        matches = find_matches(ctx, tx, res_type, cond.split("?", 1)[-1])
        if len(matches) > 1:
            raise FhirError(412, f"If-None-Exist '{cond}' matches more than one {res_type}", "multiple-matches")
        if matches:
            return FhirResponse(200, matches[0].body, matches[0],
                                outcome=info(f"{res_type}/{matches[0].res_id} already exists; nothing created"))
    body = {k: v for k, v in body.items() if k != "id"}  # the server assigns ids on create
    stored = tx.create(res_type, body, req.assigned_id)
    return _stored_response(201, stored, ctx.base, with_location=True)


def update(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("update", res_type)
    body = _validated(req.body, res_type)
    ctx.access.check_write(res_type, body)
    body = ctx.access.owned(res_type, body)
    if req.res_id is None:
        return _conditional_update(ctx, tx, req, res_type, body)
    res_id = check_id(req.res_id)
    if "id" not in body:
        raise bad_request(f"The {res_type} in the body has no id; it must be '{res_id}'")
    if body["id"] != res_id:
        raise bad_request(f"The id in the body ('{body['id']}') differs from the id in the URL ('{res_id}')")
    return _write_version(ctx, tx, req, res_type, res_id, body, "PUT", chosen_id=True)


def _write_version(ctx: Context, tx: Tx, req: FhirRequest, res_type: str, res_id: str,
                   body: dict, method: str, chosen_id: bool = False) -> FhirResponse:
    """A new version of `res_type/res_id`. A row the caller cannot see (deleted ones included:
    they keep their audience) is never written; creating under an id the client chose is the
    access gate's call, answered alike whether or not the id is taken."""
    if ctx.access.row_filter(res_type):
        seen = _visible(ctx, tx, res_type, res_id)
        if seen is None:
            if chosen_id:
                ctx.access.check_new_id(res_type)
            if tx.current(res_type, res_id) is not None:
                raise FhirError(403, f"Not permitted to write {res_type}/{res_id}", "forbidden")
        elif not seen.deleted:  # replacing content is changing it: it must be the caller's to write
            ctx.access.check_write(res_type, loads(seen.body or "{}"))
    if_match = req.header("if-match")
    try:
        stored, created = tx.update(res_type, res_id, body,
                                    parse_etag(if_match) if if_match else None, method=method)
    except VersionConflict as exc:
        if exc.actual is None:
            raise FhirError(412 if method != "PATCH" else 404,
                            f"{res_type}/{res_id} does not exist, so If-Match cannot match", "conflict") from None
        raise FhirError(412, f"Version conflict on {res_type}/{res_id}: If-Match asked for version "
                        f"{exc.expected}, the current version is {exc.actual}", "conflict") from None
    return _stored_response(201 if created else 200, stored, ctx.base, with_location=created)


def _conditional_update(ctx: Context, tx: Tx, req: FhirRequest, res_type: str,
                        body: dict) -> FhirResponse:
    matches = find_matches(ctx, tx, res_type, req.params)
    if len(matches) > 1:
        raise FhirError(412, f"The conditional update matches more than one {res_type}", "multiple-matches")
    if matches:
        target = matches[0].res_id
        if "id" in body and body["id"] != target:
            raise bad_request(f"The id in the body ('{body['id']}') differs from the matched resource ({target})")
        return _write_version(ctx, tx, req, res_type, target, {**body, "id": target}, "PUT")
    target = body.get("id") or req.assigned_id or _new_id()
    return _write_version(ctx, tx, req, res_type, target, {**body, "id": target}, "PUT",
                          chosen_id="id" in body)


def _new_id() -> str:
    return str(uuid.uuid4())


def patch(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("patch", res_type)
    if req.res_id is None:
        matches = find_matches(ctx, tx, res_type, req.params)
        if len(matches) != 1:
            raise FhirError(412 if matches else 404,
                            f"The conditional patch matches {len(matches) or 'no'} {res_type}"
                            + ("" if matches else " resource"), "multiple-matches" if matches else "not-found")
        res_id = matches[0].res_id
    else:
        res_id = check_id(req.res_id)
    cur = _visible(ctx, tx, res_type, res_id, for_update=True)  # no lost update between read and write
    if cur is None:
        raise not_found(res_type, res_id)
    if cur.deleted:
        raise FhirError(410, f"Resource {res_type}/{res_id} was deleted", "deleted")
    current = loads(cur.body or "{}")
    try:
        if req.body_kind == "json-patch":
            if not isinstance(req.body, list):
                raise bad_request("A JSON Patch document must be a JSON array of operations")
            patched = patching.apply_json_patch(current, req.body)
        elif req.body_kind == "merge-patch" or (
                isinstance(req.body, dict) and req.body.get("resourceType") != "Parameters"
                and (req.header("content-type") or "").split(";")[0].strip() in ("application/json", "application/fhir+json")):
            # RFC 7396 JSON Merge Patch: not an R4 format, but what fhirpy's resource.patch() sends
            patched = merge_patch(current, req.body)
        else:
            if not (isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters"):
                raise FhirError(415, "PATCH takes application/json-patch+json, or a FHIRPath Patch "
                                "Parameters resource as application/fhir+json or +xml", "not-supported")
            patched = patching.apply_fhirpath_patch(current, req.body)
    except patching.PatchError as exc:
        raise FhirError(exc.status, str(exc), "invalid" if exc.status == 400 else "processing") from None
    if not isinstance(patched, dict):
        raise FhirError(422, "The patch does not leave a resource", "processing")
    if patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise FhirError(422, "A patch may not change resourceType or id", "processing")
    body = _validated(patched, res_type)
    ctx.access.check_write(res_type, body)
    body = ctx.access.owned(res_type, body)
    return _write_version(ctx, tx, req, res_type, res_id, body, "PATCH")


def merge_patch(target: Any, patch_doc: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch_doc, dict):
        return patch_doc
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch_doc.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def delete(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("delete", res_type)
    if req.res_id is None:
        matches = find_matches(ctx, tx, res_type, req.params)
        if len(matches) > 1:
            raise FhirError(412, f"The conditional delete matches more than one {res_type}", "multiple-matches")
        if not matches:
            return FhirResponse(204, outcome=info("No resource matched; nothing deleted"))
        res_id = matches[0].res_id
    else:
        res_id = check_id(req.res_id)
    if ctx.access.row_filter(res_type):
        cur = _visible(ctx, tx, res_type, res_id)
        if cur is None or cur.deleted:
            return FhirResponse(204, outcome=info(f"{res_type}/{res_id} did not exist or was already deleted"))
        # deleting is changing: only what the caller could also write (not a message naming others)
        ctx.access.check_write(res_type, loads(cur.body or "{}"))
    ctx.access.check_delete(tx, res_type, res_id)
    if_match = req.header("if-match")
    try:
        stored = tx.delete(res_type, res_id, parse_etag(if_match) if if_match else None)
    except VersionConflict as exc:
        raise FhirError(412, f"Version conflict on {res_type}/{res_id}: If-Match asked for version "
                        f"{exc.expected}, the current version is {exc.actual}", "conflict") from None
    if stored is None:
        return FhirResponse(204, outcome=info(f"{res_type}/{res_id} did not exist or was already deleted"))
    return FhirResponse(204, None, stored, outcome=info(f"Deleted {res_type}/{res_id}"),
                        headers={"ETag": stored.etag})


# -- history and search -------------------------------------------------------------------------
def _int_param(req: FhirRequest, name: str) -> int | None:
    raw = req.param(name)
    if raw is None:
        return None
    value = parse_count(raw)
    if value is None:
        raise bad_request(f"{name} must be a paging cursor from a link of this server")
    return value


def history(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type) if req.res_type else None
    res_id = check_id(req.res_id) if req.res_id else None
    ctx.access.check_interaction("history", res_type)
    if res_id and _visible(ctx, tx, res_type or "", res_id) is None:
        raise not_found(res_type or "", res_id)
    since = at = None
    if req.param("_since"):
        try:
            since = date_range(req.param("_since") or "")[0]
        except ValueError as exc:
            raise bad_request(f"_since: {exc}") from None
    if req.param("_at"):
        try:
            at = date_range(split_prefix(req.param("_at") or "")[1])
        except ValueError as exc:
            raise bad_request(f"_at: {exc}") from None
    count = ctx.page_size(req)
    before = _int_param(req, "_page_before")
    rows, total = tx.history(res_type, res_id, since=since, at=at, count=count + 1, before_pk=before,
                             where=ctx.access.row_filter(res_type))
    more = len(rows) > count
    rows = rows[:count]
    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    keep = [(k, v) for k, v in req.params if k in ("_since", "_at", "_count", "_format")]
    links = [("self", page_url(ctx.base, path, keep + ([("_page_before", str(before))] if before else [])))]
    if more and rows:
        links.append(("next", page_url(ctx.base, path, keep + [("_page_before", str(rows[-1].pk))])))
    entries = []
    for row in rows:
        entry: dict[str, Any] = {"fullUrl": f"{ctx.base}/{row.res_type}/{row.res_id}"}
        if row.body is not None:
            entry["resource"] = Raw(row.body)
        method = "POST" if row.method == "POST" else ("DELETE" if row.deleted else "PUT")
        method = "PATCH" if row.method == "PATCH" else method
        url = row.res_type if method == "POST" else f"{row.res_type}/{row.res_id}"
        entry["request"] = {"method": method, "url": url}
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
        entry["response"] = {"status": status, "etag": row.etag,
                             "lastModified": row.last_updated.isoformat(timespec="milliseconds")}
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "total": total,
              "link": [{"relation": r, "url": u} for r, u in links], "entry": entries}
    if not entries:
        del bundle["entry"]
    return FhirResponse(200, bundle)


def search(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type) if req.res_type else None
    for t in (req.param("_type") or "").split(","):
        if t and res_type is None:
            check_type(t)
    if req.compartment:
        check_type(req.compartment[0])
    ctx.access.check_interaction("search", res_type)
    return FhirResponse(200, run_search(ctx, tx, req, _strict(req)))


def reindex(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    """`$reindex`: rebuild index rows (after SearchParameters were added), for a type or all."""
    ctx.access.check_interaction("operation", req.res_type)
    res_type = check_type(req.res_type) if req.res_type else None
    ctx.search.refresh(tx.conn, force=True)
    n = tx.reindex_all(res_type)
    tx.recompartment_deleted(res_type)
    tx.analyze_after_commit()  # every index row was rewritten: the old statistics describe other data
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [
        {"name": "count", "valueInteger": n},
        {"name": "message", "valueString": f"Reindexed {n} resources" + (f" of type {res_type}" if res_type else "")}]})


__all__ = ["check_id", "check_type", "create", "delete", "find_matches", "history", "merge_patch",
           "parse_etag", "patch", "read", "reindex", "search", "update", "vread"]
