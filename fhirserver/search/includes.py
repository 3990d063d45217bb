"""`_include` and `_revinclude` (with `:iterate`) over the one reference-link table.

Included resources pass through the same access conditions as the matches; at most
`MAX_INCLUDED` are returned per page, and the caller is told when more matched (never a silent
cut).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.search.compiler import Include
from fhirserver.storage import Stored, Tx, idx_reference, resource

MAX_INCLUDED = 1000
MAX_ITERATIONS = 4

AccessFilter = Callable[[str | None], Sequence[ColumnElement[bool]]]


def included(tx: Tx, rows: list[Stored], includes: list[Include],
             access: AccessFilter) -> tuple[list[Stored], bool]:
    """Resources referenced by (or referencing) the page, with `:iterate`, under `access`
    (the caller's row filter); the flag says whether more than `MAX_INCLUDED` matched."""
    seen = {(r.res_type, r.res_id) for r in rows}
    out: list[Stored] = []
    frontier = rows
    truncated = False
    for iteration in range(MAX_ITERATIONS + 1):
        if not frontier:
            break
        found: list[Stored] = []
        for inc in includes:
            if iteration > 0 and not inc.iterate:
                continue
            for row in (_reverse(tx, frontier, inc, access) if inc.reverse else _forward(tx, frontier, inc, access)):
                key = (row.res_type, row.res_id)
                if key in seen:
                    continue
                if len(out) + len(found) >= MAX_INCLUDED:
                    truncated = True
                    break
                seen.add(key)
                found.append(row)
        out.extend(found)
        frontier = found
    return out, truncated


def _forward(tx: Tx, frontier: list[Stored], inc: Include, access: AccessFilter) -> list[Stored]:
    ref = idx_reference
    conds = [ref.c.res_pk.in_([r.pk for r in frontier if inc.source_type in (None, r.res_type)])]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    if inc.target_type:
        conds.append(ref.c.target_type == inc.target_type)
    return _fetch(tx, select(ref.c.target_type, ref.c.target_id).where(*conds), inc.target_type, access)


def _reverse(tx: Tx, frontier: list[Stored], inc: Include, access: AccessFilter) -> list[Stored]:
    ref = idx_reference
    pairs = {(r.res_type, r.res_id) for r in frontier}
    conds = [ref.c.target_id.in_({i for _t, i in pairs}), ref.c.target_type.in_({t for t, _i in pairs})]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    r = resource
    q = select(r.c.pk).join(ref, ref.c.res_pk == r.c.pk).where(
        *conds, r.c.deleted.is_(False), *access(inc.source_type)).distinct().limit(MAX_INCLUDED + 1)
    pks = [pk for (pk,) in tx.conn.execute(q)]
    return tx.by_pks(pks)


def _fetch(tx: Tx, targets_q: Any, target_type: str | None, access: AccessFilter) -> list[Stored]:
    targets = {(t, i) for t, i in tx.conn.execute(targets_q) if t and i}
    if not targets:
        return []
    r = resource
    by_type: dict[str, list[str]] = {}
    for t, i in targets:
        by_type.setdefault(t, []).append(i)
    alts = [and_(r.c.res_type == t, r.c.res_id.in_(ids)) for t, ids in by_type.items()]
    q = select(r.c.pk).where(or_(*alts), r.c.deleted.is_(False), *access(target_type)).limit(MAX_INCLUDED + 1)
    return tx.by_pks([pk for (pk,) in tx.conn.execute(q)])


__all__ = ["MAX_INCLUDED", "MAX_ITERATIONS", "included"]
