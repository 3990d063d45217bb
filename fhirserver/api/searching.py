"""The search interaction: compile, page by keyset, add `_include`/`_revinclude`, build the Bundle.

Paging links carry a cursor (the sort key values of the last or first row), not an offset, so a
page costs what the first page costs and stays correct while data changes. Included resources
pass through the same access conditions as matches; when the include budget runs out, an
OperationOutcome entry says so (never a silent cut).
"""
from __future__ import annotations

import base64
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import and_, or_, select

from fhirserver.api.formats import Raw
from fhirserver.api.outcome import FhirError, bad_request
from fhirserver.model.integers import INT64_MAX, parse_count
from fhirserver.model.text import printable
from fhirserver.model.validate import is_valid_id
from fhirserver.search import Include, SearchError
from fhirserver.search.compiler import Compiler
from fhirserver.storage import Stored, Tx
from fhirserver.storage.tables import idx_reference, resource

MAX_INCLUDED = 1000
MAX_ITERATIONS = 4


def encode_cursor(values: list[Any]) -> str:
    if len(values) == 1 and isinstance(values[0], int):
        return str(values[0])
    tagged = []
    for v in values:
        if isinstance(v, datetime):
            tagged.append({"d": v.isoformat()})
        elif isinstance(v, Decimal):
            tagged.append({"n": str(v)})
        else:
            tagged.append(v)
    return base64.urlsafe_b64encode(orjson.dumps(tagged)).decode().rstrip("=")


def decode_cursor(token: str, kinds: list[str]) -> list[Any]:
    """The sort key values a paging link carries, checked against the search's sort columns.

    `kinds` names each key's type (`flag`, `str`, `date`, `num`, `int`); a cursor edited by
    hand (wrong JSON types, numbers beyond 64 bits, NaN) is refused here, not by the database.
    """
    bad = bad_request("The paging cursor is not one this server made")
    try:
        pk = parse_count(token)
        if pk is not None:
            values: list[Any] = [pk]
        else:
            raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(raw, list):
                raise bad
            values = []
            for v in raw:
                if isinstance(v, dict) and isinstance(v.get("d"), str):
                    values.append(datetime.fromisoformat(v["d"]))
                elif isinstance(v, dict) and isinstance(v.get("n"), str):
                    values.append(Decimal(v["n"]))
                else:
                    values.append(v)
    except (ValueError, TypeError, ArithmeticError, orjson.JSONDecodeError):
        raise bad from None
    if len(values) != len(kinds):
        raise bad_request("The paging cursor does not fit this search (was _sort changed?)")
    if not all(_fits(v, k) for v, k in zip(values, kinds)):
        raise bad
    return values


def _fits(value: Any, kind: str) -> bool:
    if kind in ("flag", "int"):
        return type(value) is int and -INT64_MAX <= value <= INT64_MAX and (kind == "int" or value in (0, 1))
    if kind == "str":
        return isinstance(value, str) and "\x00" not in value
    if kind == "date":
        return isinstance(value, datetime)
    if kind == "num":
        if isinstance(value, float):
            return math.isfinite(value)
        return (isinstance(value, Decimal) and value.is_finite()) or (
            type(value) is int and -INT64_MAX <= value <= INT64_MAX)
    return False


def cursor_kinds(sort: list[Any]) -> list[str]:
    """The type of each cursor value: a missing-value flag and the value per sort key, then pk."""
    kinds: list[str] = []
    for key in sort:
        kinds += ["flag", key.kind]
    return kinds + ["int"]


def _url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    url = f"{base}/{path}" if path else base
    return url + ("?" + urlencode(params) if params else "")


def run_search(ctx: Any, tx: Tx, req: Any, strict: bool) -> dict[str, Any]:
    """Execute a search request; returns the searchset Bundle."""
    res_type = req.res_type
    types_param = req.param("_type")
    summary = req.param("_summary")
    if summary not in (None, "true", "false", "text", "data", "count"):
        raise bad_request(f"_summary must be true, text, data, count or false, not '{summary}'")
    total_mode = req.param("_total") or "accurate"
    if total_mode not in ("none", "estimate", "accurate"):
        raise bad_request(f"_total must be none, estimate or accurate, not '{total_mode}'")
    compiler: Compiler = ctx.search.compiler(postgres=ctx.postgres, access=ctx.access.row_filter)
    try:
        compiled = compiler.compile(res_type, req.params, strict=strict)
        where = [*compiled.where, *ctx.access.row_filter(res_type)]
        compartment = getattr(req, "compartment", None)
        if compartment:
            if not is_valid_id(compartment[1]):
                raise FhirError(404, f"Resource {compartment[0]}/{compartment[1]} is not known", "not-found")
            where.append(compiler.compartment(compartment[0], compartment[1], res_type))
            if res_type is None:
                where.append(resource.c.res_type.in_(compiler.compartment_types(compartment[0])))
    except SearchError as exc:
        raise FhirError(400, str(exc), "not-supported" if "nknown" in str(exc) else "invalid") from None
    if res_type is None and types_param:
        where.append(resource.c.res_type.in_(types_param.split(",")))
    count = 0 if summary == "count" else ctx.page_size(req)
    kinds = cursor_kinds(compiled.sort)
    after = req.param("_page_after")
    before = req.param("_page_before")
    after_c = decode_cursor(after, kinds) if after else None
    before_c = decode_cursor(before, kinds) if before else None
    rows, total, more, cursors = tx.search(res_type, where, count=count, after=after_c, before=before_c,
                                           sort=compiled.sort, with_total=total_mode != "none")
    if compartment:
        path = f"{compartment[0]}/{compartment[1]}/{res_type or '*'}"
    else:
        path = res_type or ""
    keep = [(k, v) for k, v in req.params if k in ("_type", "_summary", "_elements", "_total", "_format",
                                                     "_pretty", "_sort") or k.startswith("_include")
            or k.startswith("_revinclude")]
    base_params = list(compiled.used) + keep + [("_count", str(count))]
    self_params = base_params + ([("_page_after", after)] if after else []) + \
        ([("_page_before", before)] if before else [])
    links = [("self", _url(ctx.base, path, self_params))]
    if rows:
        has_next = more if before is None else True
        # a page reached through `next` has one before it; the first page has none (no query)
        has_prev = (before is not None and more) or after is not None
        if has_next:
            links.append(("next", _url(ctx.base, path, base_params + [("_page_after", encode_cursor(cursors[-1]))])))
        if has_prev:
            links.append(("previous", _url(ctx.base, path, base_params + [("_page_before", encode_cursor(cursors[0]))])))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": r, "url": u} for r, u in links]
    entries = [_entry(ctx, r, "match") for r in rows]
    warnings = []
    if compiled.includes and rows:
        included, truncated = _includes(ctx, tx, rows, compiled.includes)
        entries.extend(_entry(ctx, r, "include") for r in included)
        if truncated:
            warnings.append(f"More than {MAX_INCLUDED} resources matched _include/_revinclude; only the first "
                            f"{MAX_INCLUDED} are in this page. Ask for a smaller _count to get them all.")
    if compiled.ignored and not strict:
        warnings.append("Ignored search parameters: " + ", ".join(compiled.ignored))
    if warnings:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "incomplete" if "_include" in w else "not-supported",
             "diagnostics": printable(w)} for w in warnings]}, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(ctx: Any, row: Stored, mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{ctx.base}/{row.res_type}/{row.res_id}", "resource": Raw(row.body or "{}"),
            "search": {"mode": mode}}


def _includes(ctx: Any, tx: Tx, rows: list[Stored], includes: list[Include]) -> tuple[list[Stored], bool]:
    """Resources referenced by (or referencing) the page, with `:iterate`, under access rules."""
    seen = {(r.res_type, r.res_id) for r in rows}
    out: list[Stored] = []
    frontier = rows
    truncated = False
    for iteration in range(MAX_ITERATIONS + 1):
        if not frontier:
            break
        found: list[Stored] = []
        for inc in includes:
            if iteration > 0 and not inc.iterate:
                continue
            for row in (_reverse(ctx, tx, frontier, inc) if inc.reverse else _forward(ctx, tx, frontier, inc)):
                key = (row.res_type, row.res_id)
                if key in seen:
                    continue
                if len(out) + len(found) >= MAX_INCLUDED:
                    truncated = True
                    break
                seen.add(key)
                found.append(row)
        out.extend(found)
        frontier = found
    return out, truncated


def _access(ctx: Any, res_type: str | None) -> list[Any]:
    return list(ctx.access.row_filter(res_type))


def _forward(ctx: Any, tx: Tx, frontier: list[Stored], inc: Include) -> list[Stored]:
    ref = idx_reference
    conds = [ref.c.res_pk.in_([r.pk for r in frontier if inc.source_type in (None, r.res_type)])]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    if inc.target_type:
        conds.append(ref.c.target_type == inc.target_type)
    return _fetch(ctx, tx, select(ref.c.target_type, ref.c.target_id).where(*conds), inc.target_type)


def _reverse(ctx: Any, tx: Tx, frontier: list[Stored], inc: Include) -> list[Stored]:
    ref = idx_reference
    pairs = {(r.res_type, r.res_id) for r in frontier}
    conds = [ref.c.target_id.in_({i for _t, i in pairs}), ref.c.target_type.in_({t for t, _i in pairs})]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    r = resource
    q = select(r.c.pk).join(ref, ref.c.res_pk == r.c.pk).where(
        *conds, r.c.deleted.is_(False), *_access(ctx, inc.source_type)).distinct().limit(MAX_INCLUDED + 1)
    pks = [pk for (pk,) in tx.conn.execute(q)]
    return tx.by_pks(pks)


def _fetch(ctx: Any, tx: Tx, targets_q: Any, target_type: str | None) -> list[Stored]:
    targets = {(t, i) for t, i in tx.conn.execute(targets_q) if t and i}
    if not targets:
        return []
    r = resource
    by_type: dict[str, list[str]] = {}
    for t, i in targets:
        by_type.setdefault(t, []).append(i)
    alts = [and_(r.c.res_type == t, r.c.res_id.in_(ids)) for t, ids in by_type.items()]
    q = select(r.c.pk).where(or_(*alts), r.c.deleted.is_(False), *_access(ctx, target_type)).limit(MAX_INCLUDED + 1)
    return tx.by_pks([pk for (pk,) in tx.conn.execute(q)])
