"""The history interactions (instance, type and system `_history`): newest first, paged by a
keyset cursor (`_page_before`), `_since` and `_at` as in R4."""
from __future__ import annotations

from typing import Any

from fhirserver.errors import bad_request, not_found
from fhirserver.interactions.checks import check_id, check_type, visible
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.search import page_url
from fhirserver.model import Raw
from fhirserver.search import date_range, split_prefix
from fhirserver.storage import Tx


def history(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type) if req.res_type else None
    res_id = check_id(req.res_id) if req.res_id else None
    ctx.access.check_interaction("history", res_type)
    if res_id and visible(ctx, tx, res_type or "", res_id) is None:
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
    before = req.count_param("_page_before", "_page_before must be a paging cursor from a link of this server")
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


__all__ = ["history"]
