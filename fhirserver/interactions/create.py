"""The create interaction (`POST [type]`), conditional with If-None-Exist: the server assigns the
id; a single match answers 200 with the existing resource instead of a copy."""
from __future__ import annotations

from fhirserver.errors import FhirError, info
from fhirserver.interactions.checks import check_type, writable
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.versions import stored_response
from fhirserver.storage import Tx


def create(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("create", res_type)
    body = writable(ctx, res_type, req.body)
    cond = req.header("if-none-exist")
    if cond:
        matches = find_matches(ctx, tx, res_type, cond.split("?", 1)[-1])
        if len(matches) > 1:
            raise FhirError(412, f"If-None-Exist '{cond}' matches more than one {res_type}", "multiple-matches")
        if matches:
            return FhirResponse(200, matches[0].body, matches[0],
                                outcome=info(f"{res_type}/{matches[0].res_id} already exists; nothing created"))
    body = {k: v for k, v in body.items() if k != "id"}  # the server assigns ids on create
    stored = tx.create(res_type, body, req.assigned_id, fresh=True)  # a Bundle assigns uuid4 ids
    return stored_response(201, stored, ctx.base, with_location=True)


__all__ = ["create"]
