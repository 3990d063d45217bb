"""Checks every interaction shares: the type and id in the URL, the version in an ETag, the body,
and whether the caller may see the row it names (a row the caller may not see is answered as
missing, so its existence does not leak)."""
from __future__ import annotations

import re
from typing import Any

from fhirserver.errors import FhirError, bad_request
from fhirserver.interactions.context import Context
from fhirserver.model import (
    NOT_STORABLE, R4_RESOURCE_TYPES, InvalidResource, is_valid_id, parse_count, validate_resource,
)
from fhirserver.storage import Stored, Tx

_ETAG_RE = re.compile(r'^(?:W/)?"?([^"]+)"?$')


def parse_etag(value: str) -> int:
    m = _ETAG_RE.match(value.strip())
    version = parse_count(m.group(1)) if m else None
    if version is None:
        raise bad_request(f"'{value}' is not a version ETag (expected W/\"<versionId>\")")
    return version


def check_type(res_type: str | None) -> str:
    if not res_type or res_type not in R4_RESOURCE_TYPES:
        raise FhirError(404, f"Unknown resource type '{res_type}'", "not-supported")
    return res_type


def check_id(res_id: str | None) -> str:
    if not is_valid_id(res_id):
        raise bad_request(f"'{res_id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")
    return res_id  # type: ignore[return-value]


def validated(body: Any, res_type: str) -> dict[str, Any]:
    """The request body as a valid resource of `res_type`, or the OperationOutcome saying why not."""
    if body is None:
        raise bad_request("A resource body is required")
    if res_type in NOT_STORABLE:
        raise FhirError(405, f"{res_type} resources are not stored", "not-supported")
    try:
        return validate_resource(body, res_type)
    except InvalidResource as exc:
        raise FhirError(exc.status, exc.issues) from None


def writable(ctx: Context, res_type: str, body: Any) -> dict[str, Any]:
    """`body` validated as `res_type`, checked as one the caller may write, and as it is stored
    (with the owner tag the policy stamps): what every interaction that writes a body does."""
    body = validated(body, res_type)
    ctx.access.check_write(res_type, body)
    return ctx.access.owned(res_type, body)


def visible(ctx: Context, tx: Tx, res_type: str, res_id: str, for_update: bool = False) -> Stored | None:
    """The current row if it exists and the caller may see it (else None: no existence leak)."""
    return tx.current(res_type, res_id, for_update=for_update, where=ctx.access.row_filter(res_type))


__all__ = ["check_id", "check_type", "parse_etag", "validated", "visible", "writable"]
