"""`Patient/{id}/$everything`: the patient, everything in their compartment, and what that references.

Built on the compartment search (`/Patient/{id}/*`) with `_include=*`, so paging (keyset links),
access conditions and the include budget behave as in any search. `_since` and `_type` narrow it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fhirserver.errors import FhirError
from fhirserver.interactions import FhirResponse, check_id, run_search


def everything(ctx: Any, tx: Any, req: Any) -> Any:
    if req.res_type != "Patient" or not req.res_id:
        raise FhirError(400, "$everything runs on one Patient: /Patient/{id}/$everything", "invalid")
    pid = check_id(req.res_id)
    if tx.current("Patient", pid, where=ctx.access.row_filter("Patient")) is None:
        raise FhirError(404, f"Patient/{pid} is not known", "not-found")
    params: list[tuple[str, str]] = []
    for name, value in req.params:
        if name == "_since":
            params.append(("_lastUpdated", "ge" + value))
        elif name in ("_count", "_type", "_page_after", "_page_before", "_format", "_summary", "_elements"):
            params.append((name, value))
        elif name in ("start", "end"):
            continue  # clinical date windows: not narrowed here (documented in the OperationDefinition)
        else:
            raise FhirError(400, f"$everything does not take '{name}'", "not-supported")
    params.append(("_include", "*"))
    inner = dataclasses.replace(req, res_type=None, res_id=None, operation=None, params=params,
                                compartment=("Patient", pid))
    bundle = run_search(ctx, tx, inner, strict=True)
    return FhirResponse(200, bundle)
