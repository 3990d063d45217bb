"""Writing a new version of an existing (or client-named) resource, shared by update and patch:
the access check on the row being replaced, If-Match, and the answer to a write."""
from __future__ import annotations

from fhirserver.errors import FhirError
from fhirserver.interactions.checks import parse_etag, visible
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.model import loads
from fhirserver.storage import Stored, Tx, VersionConflict


def stored_response(status: int, stored: Stored, base: str, with_location: bool = False) -> FhirResponse:
    loc = f"{base}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}" if with_location else None
    return FhirResponse(status, stored.body, stored, loc)


def write_version(ctx: Context, tx: Tx, req: FhirRequest, res_type: str, res_id: str,
                  body: dict, method: str, chosen_id: bool = False) -> FhirResponse:
    """A new version of `res_type/res_id`. A row the caller cannot see (deleted ones included:
    they keep their audience) is never written; creating under an id the client chose is the
    access gate's call, answered alike whether or not the id is taken."""
    if ctx.access.row_filter(res_type):
        seen = visible(ctx, tx, res_type, res_id)
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
    return stored_response(201 if created else 200, stored, ctx.base, with_location=created)


__all__ = ["stored_response", "write_version"]
