"""The update interaction (`PUT [type]/[id]`, and conditional `PUT [type]?params`): update as
create when the id is new, If-Match for optimistic locking."""
from __future__ import annotations

import uuid

from fhirserver.errors import FhirError, bad_request
from fhirserver.interactions.checks import check_id, check_type, writable
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.versions import write_version
from fhirserver.storage import Tx


def update(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type)
    ctx.access.check_interaction("update", res_type)
    body = writable(ctx, res_type, req.body)
    if req.res_id is None:
        return _conditional_update(ctx, tx, req, res_type, body)
    res_id = check_id(req.res_id)
    if "id" not in body:
        raise bad_request(f"The {res_type} in the body has no id; it must be '{res_id}'")
    if body["id"] != res_id:
        raise bad_request(f"The id in the body ('{body['id']}') differs from the id in the URL ('{res_id}')")
    return write_version(ctx, tx, req, res_type, res_id, body, "PUT", chosen_id=True)


def _conditional_update(ctx: Context, tx: Tx, req: FhirRequest, res_type: str,
                        body: dict) -> FhirResponse:
    matches = find_matches(ctx, tx, res_type, req.params)
    if len(matches) > 1:
        raise FhirError(412, f"The conditional update matches more than one {res_type}", "multiple-matches")
    if matches:
        target = matches[0].res_id
        if "id" in body and body["id"] != target:
            raise bad_request(f"The id in the body ('{body['id']}') differs from the matched resource ({target})")
        return write_version(ctx, tx, req, res_type, target, {**body, "id": target}, "PUT")
    target = body.get("id") or req.assigned_id or _new_id()
    return write_version(ctx, tx, req, res_type, target, {**body, "id": target}, "PUT",
                         chosen_id="id" in body)


def _new_id() -> str:
    return str(uuid.uuid4())


__all__ = ["update"]
