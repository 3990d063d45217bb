"""The search interactions (search-type, search-system, search-compartment; GET or POST
`_search`): one handler, since they differ only in the scope the planner is given; the execution
and the Bundle are in `interactions.search`."""
from __future__ import annotations

from fhirserver.interactions.checks import check_type
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.interactions.search import run_search
from fhirserver.storage import Tx


def _strict(req: FhirRequest) -> bool:
    prefer = (req.header("prefer") or "").replace(" ", "").lower()
    return "handling=strict" in prefer


def search(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    res_type = check_type(req.res_type) if req.res_type else None
    for t in (req.param("_type") or "").split(","):
        if t and res_type is None:
            check_type(t)
    if req.compartment:
        check_type(req.compartment[0])
    ctx.access.check_interaction("search", res_type)
    return FhirResponse(200, run_search(ctx, tx, req, _strict(req)))


__all__ = ["search"]
