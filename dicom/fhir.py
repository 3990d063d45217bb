"""FHIR side of the node: finding resources through the search contract, with a scan fallback
for parameters the search compiler does not know yet."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from fhirserver.model import loads
from fhirserver.search import SearchError, compile_search
from fhirserver.storage import Tx


def search(tx: Tx, res_type: str, params: list[tuple[str, str]],
           predicate: Callable[[dict[str, Any]], bool], limit: int = 1000, *,
           policy: Any) -> Iterator[tuple[str, dict]]:
    """(id, body) of current resources matching `params` that `policy` (the caller's access
    policy: a node's, a STOW sender's) lets the caller see; `predicate` re-checks each body (and
    is the whole filter when the compiler cannot handle `params`)."""
    try:
        where = list(compile_search(res_type, params, postgres=tx.postgres, strict=True).where)
    except SearchError:
        where = []
    where += list(policy.row_filter(res_type))
    after = None
    seen = 0
    while seen < limit:
        rows, _, more, cursors = tx.search(res_type, where, count=200, after=after, with_total=False)
        for row in rows:
            body = loads(row.body)
            if predicate(body):
                seen += 1
                yield row.res_id, body
        if not more or not rows:
            return
        after = cursors[-1]


def has_identifier(body: dict[str, Any], value: str, system: str | None = None) -> bool:
    for ident in body.get("identifier") or []:
        if ident.get("value") == value and (system is None or ident.get("system") == system):
            return True
    return False


def ref_id(ref: dict[str, Any] | None, res_type: str) -> str | None:
    if not ref:
        return None
    text = ref.get("reference") or ""
    head, _, rid = text.rpartition("/")
    if head.endswith(res_type) and rid:
        return rid.split("/_history")[0]
    return None
