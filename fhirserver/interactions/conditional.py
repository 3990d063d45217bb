"""The criteria of conditional create, update, patch and delete (and of a transaction's
conditional references): which resources a `Type?params` query matches."""
from __future__ import annotations

from urllib.parse import parse_qsl

from fhirserver.errors import FhirError, bad_request
from fhirserver.interactions.context import Context
from fhirserver.search import SearchError
from fhirserver.storage import Stored, Tx


def find_matches(ctx: Context, tx: Tx, res_type: str, query: str | list[tuple[str, str]],
                 limit: int = 2, lock: bool = True) -> list[Stored]:
    """Resources matching a conditional query (`identifier=...`); unknown parameters are errors.

    `lock`: hold the criteria's lock until commit (storage.locks), so that of concurrent
    conditional writes with the same criteria the later ones see what the first one wrote."""
    params = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
    params = [(k, v) for k, v in params if not k.startswith("_format")]
    if not params:
        raise bad_request("A conditional interaction needs search parameters")
    try:
        compiled = ctx.search.compile(res_type, params, postgres=ctx.postgres, strict=True,
                                      access=ctx.access.row_filter)
    except SearchError as exc:
        raise FhirError(400, str(exc), "not-supported") from None
    where = [*compiled.where, *ctx.access.row_filter(res_type)]
    if lock:
        tx.lock_criteria(res_type, params)
    rows, _total, _more, _cursors = tx.search(res_type, where, count=limit, with_total=False)
    return rows


__all__ = ["find_matches"]
