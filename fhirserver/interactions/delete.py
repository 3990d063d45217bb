"""The delete interaction (`DELETE [type]/[id]`, conditional `DELETE [type]?params`): deleting
what is already gone, or was never there, answers 204 (deletes are idempotent)."""
from __future__ import annotations

from fhirserver.errors import FhirError, info
from fhirserver.interactions.checks import check_id, check_type, parse_etag, visible
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.model import loads
from fhirserver.storage import Tx, VersionConflict


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
        cur = visible(ctx, tx, res_type, res_id)
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


__all__ = ["delete"]
