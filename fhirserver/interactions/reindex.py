"""`$reindex`: rebuild index rows after SearchParameters were added, for one type or all."""
from __future__ import annotations

from fhirserver.interactions.checks import check_type
from fhirserver.interactions.context import Context, FhirRequest, FhirResponse
from fhirserver.storage import Tx


def reindex(ctx: Context, tx: Tx, req: FhirRequest) -> FhirResponse:
    """`$reindex`: rebuild index rows (after SearchParameters were added), for a type or all."""
    ctx.access.check_interaction("operation", req.res_type)
    res_type = check_type(req.res_type) if req.res_type else None
    ctx.search.refresh(tx.conn, force=True)
    n = tx.reindex_all(res_type)
    tx.recompartment_deleted(res_type)
    tx.analyze_after_commit()  # every index row was rewritten: the old statistics describe other data
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [
        {"name": "count", "valueInteger": n},
        {"name": "message", "valueString": f"Reindexed {n} resources" + (f" of type {res_type}" if res_type else "")}]})


__all__ = ["reindex"]
