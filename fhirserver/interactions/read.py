"""The read interaction (`GET [type]/[id]`), with the conditional read vread shares
(If-None-Match, If-Modified-Since answered 304)."""
from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from fhirserver.errors import FhirError, not_found
from fhirserver.interactions.checks import check_id, check_type, parse_etag, visible
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse, http_date
from fhirserver.search import date_range
from fhirserver.storage import Tx


def read(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type, res_id = check_type(req.res_type), check_id(req.res_id)
    ctx.access.check_interaction("read", res_type)
    cur = visible(ctx, tx, res_type, res_id)
    if cur is None:
        raise not_found(res_type, res_id)
    if cur.deleted:
        raise FhirError(410, f"Resource {res_type}/{res_id} was deleted", "deleted",
                        headers={"ETag": cur.etag, "Last-Modified": http_date(cur.last_updated)})
    return conditional_read(req, FhirResponse(200, cur.body, cur))


def conditional_read(req: FhirRequest, resp: FhirResponse) -> FhirResponse:
    """`resp`, or 304 when the client's copy (If-None-Match / If-Modified-Since) is current."""
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


__all__ = ["conditional_read", "read"]
