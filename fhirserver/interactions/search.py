"""The search interaction: compile, page by keyset, add `_include`/`_revinclude`, build the Bundle.

Paging links carry a cursor (fhirserver.search.paging), not an offset. Included resources pass
through the same access conditions as matches (fhirserver.search.includes); when the include
budget runs out, an OperationOutcome entry says so (never a silent cut). No SQL is written here:
the search layer builds every condition.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fhirserver.errors import FhirError, bad_request, printable
from fhirserver.model import Raw, is_valid_id
from fhirserver.search import Compiler, MAX_INCLUDED, SearchError, cursor_kinds, decode_cursor, encode_cursor, included
from fhirserver.storage import Stored, Tx


def page_url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    """A link of a searchset or history Bundle."""
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
                where.append(compiler.of_types(compiler.compartment_types(compartment[0])))
    except SearchError as exc:
        raise FhirError(400, str(exc), "not-supported" if "nknown" in str(exc) else "invalid") from None
    if res_type is None and types_param:
        where.append(compiler.of_types(types_param.split(",")))
    count = 0 if summary == "count" else ctx.page_size(req)
    kinds = cursor_kinds(compiled.sort)
    after = req.param("_page_after")
    before = req.param("_page_before")
    after_c = decode_cursor(after, kinds) if after else None
    before_c = decode_cursor(before, kinds) if before else None
    rows, total, more, cursors = tx.search(res_type, where, count=count, after=after_c, before=before_c,
                                           sort=compiled.sort, with_total=total_mode != "none",
                                           estimate=total_mode == "estimate")
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
    links = [("self", page_url(ctx.base, path, self_params))]
    if rows:
        has_next = more if before is None else True
        # a page reached through `next` has one before it; the first page has none (no query)
        has_prev = (before is not None and more) or after is not None
        if has_next:
            links.append(("next", page_url(ctx.base, path, base_params + [("_page_after", encode_cursor(cursors[-1]))])))
        if has_prev:
            links.append(("previous", page_url(ctx.base, path, base_params + [("_page_before", encode_cursor(cursors[0]))])))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": r, "url": u} for r, u in links]
    entries = [_entry(ctx, r, "match") for r in rows]
    warnings = []
    if compiled.includes and rows:
        extra, truncated = included(tx, rows, compiled.includes, ctx.access.row_filter)
        entries.extend(_entry(ctx, r, "include") for r in extra)
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


__all__ = ["page_url", "run_search"]
