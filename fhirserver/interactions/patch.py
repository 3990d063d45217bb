"""The patch interaction (`PATCH [type]/[id]`, conditional `PATCH [type]?params`): JSON Patch,
FHIRPath Patch, or JSON Merge Patch applied to the current version under a row lock, then
validated and written like an update."""
from __future__ import annotations

from typing import Any

from fhirserver.errors import FhirError, bad_request, not_found
from fhirserver.interactions.checks import check_id, check_type, visible, writable
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.versions import write_version
from fhirserver.model import PatchError, apply_fhirpath_patch, apply_json_patch, loads
from fhirserver.storage import Tx


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
    cur = visible(ctx, tx, res_type, res_id, for_update=True)  # no lost update between read and write
    if cur is None:
        raise not_found(res_type, res_id)
    if cur.deleted:
        raise FhirError(410, f"Resource {res_type}/{res_id} was deleted", "deleted")
    current = loads(cur.body or "{}")
    try:
        if req.body_kind == "json-patch":
            if not isinstance(req.body, list):
                raise bad_request("A JSON Patch document must be a JSON array of operations")
            patched = apply_json_patch(current, req.body)
        elif req.body_kind == "merge-patch" or (
                isinstance(req.body, dict) and req.body.get("resourceType") != "Parameters"
                and (req.header("content-type") or "").split(";")[0].strip() in ("application/json", "application/fhir+json")):
            # RFC 7396 JSON Merge Patch: not an R4 format, but what fhirpy's resource.patch() sends
            patched = merge_patch(current, req.body)
        else:
            if not (isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters"):
                raise FhirError(415, "PATCH takes application/json-patch+json, or a FHIRPath Patch "
                                "Parameters resource as application/fhir+json or +xml", "not-supported")
            patched = apply_fhirpath_patch(current, req.body)
    except PatchError as exc:
        raise FhirError(exc.status, str(exc), "invalid" if exc.status == 400 else "processing") from None
    if not isinstance(patched, dict):
        raise FhirError(422, "The patch does not leave a resource", "processing")
    if patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise FhirError(422, "A patch may not change resourceType or id", "processing")
    return write_version(ctx, tx, req, res_type, res_id, writable(ctx, res_type, patched), "PATCH")


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


__all__ = ["merge_patch", "patch"]
