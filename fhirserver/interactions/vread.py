"""The vread interaction (`GET [type]/[id]/_history/[vid]`): one version, if the caller may see
the resource's current row (access is decided on the current version, like a read)."""
from __future__ import annotations

from fhirserver.errors import FhirError, not_found
from fhirserver.interactions.checks import check_id, check_type, visible
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.read import conditional_read
from fhirserver.model import parse_count
from fhirserver.storage import Tx


def vread(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type, res_id = check_type(req.res_type), check_id(req.res_id)
    ctx.access.check_interaction("vread", res_type)
    version = parse_count(req.version_id)
    if version is None:
        raise not_found(res_type, f"{res_id}/_history/{req.version_id}")
    if visible(ctx, tx, res_type, res_id) is None:
        raise not_found(res_type, res_id)
    ver = tx.version(res_type, res_id, version)
    if ver is None:
        raise FhirError(404, f"Version {req.version_id} of {res_type}/{res_id} is not known", "not-found")
    if ver.deleted:
        raise FhirError(410, f"Version {req.version_id} of {res_type}/{res_id} is a deletion", "deleted")
    return conditional_read(req, FhirResponse(200, ver.body, ver))


__all__ = ["vread"]
