"""Which handler serves a request: the interactions by method and URL shape, `$operations` from
the registry the Context carries (built by the app factory; the router imports no operation)."""
from __future__ import annotations

from typing import Any

from fhirserver.errors import FhirError
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse, Handler
from fhirserver.interactions.create import create
from fhirserver.interactions.delete import delete
from fhirserver.interactions.history import history
from fhirserver.interactions.patch import patch
from fhirserver.interactions.read import read
from fhirserver.interactions.search_type import search
from fhirserver.interactions.update import update
from fhirserver.interactions.vread import vread


def route(req: FhirRequest, ctx: Context | None = None) -> Handler:
    """Which handler serves this request (405 when the method makes no sense for the URL)."""
    m = req.method
    if req.operation and req.operation.startswith("$"):
        op = ctx.operations.get(req.operation) if ctx is not None else None
        if op is None:
            raise FhirError(404 if m in ("GET", "POST") else 405,
                            f"Operation {req.operation} is not supported", "not-supported")
        if m not in ("GET", "POST"):
            raise FhirError(405, f"{req.operation} takes POST", "not-supported")
        return op
    if req.operation == "_history":
        if m == "GET":
            return vread if req.version_id else history
        raise FhirError(405, f"{m} is not allowed on a history URL", "not-supported")
    if req.operation == "_search":
        if m == "POST":
            return search
        raise FhirError(405, "_search takes POST", "not-supported")
    if req.res_type is None:
        if m == "GET":
            return search
        raise FhirError(405, f"{m} is not allowed on the base URL here", "not-supported")
    if req.compartment is not None:
        if m in ("GET", "HEAD"):
            return search
        raise FhirError(405, "A compartment takes GET, or POST to _search", "not-supported")
    if req.res_id is None:
        table = {"GET": search, "POST": create, "PUT": update, "DELETE": delete, "PATCH": patch}
    else:
        table = {"GET": read, "PUT": update, "DELETE": delete, "PATCH": patch}
    if m == "HEAD":
        m = "GET"
    if m not in table:
        raise FhirError(405, f"{m} is not allowed on this URL", "not-supported",
                        headers={"Allow": ", ".join(table)})
    if req.res_id is None and m in ("PUT", "DELETE", "PATCH") and not [
            p for p in req.params if not p[0].startswith("_format")]:
        raise FhirError(405 if m != "PUT" else 400,
                        f"{m} on a type needs search parameters (conditional {m.lower()})", "not-supported")
    return table[m]


def dispatch(ctx: Context, tx: Any, req: FhirRequest) -> FhirResponse:
    tx.actor = ctx.access  # who writes: the subscriptions' write hook records the owner
    return route(req, ctx)(ctx, tx, req)


__all__ = ["dispatch", "route"]
