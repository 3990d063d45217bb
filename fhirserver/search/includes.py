"""`_include` and `_revinclude` (with `:iterate`) over the one reference-link table.

Included resources pass through the same access conditions as the matches; at most
`MAX_INCLUDED` are returned per page, and the caller is told when more matched (never a silent
cut).
"""
from __future__ import annotations

from typing import Callable, Sequence

from sqlalchemy import exists
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
    """The resources the frontier's references of `inc.param` point to: one statement (the
    reference rows, the targets' current rows and the caller's access conditions)."""
    ref, r = idx_reference, resource
    conds = [ref.c.res_pk.in_([x.pk for x in frontier if inc.source_type in (None, x.res_type)]),
             ref.c.target_type == r.c.res_type, ref.c.target_id == r.c.res_id]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    where = [exists().where(*conds), r.c.deleted.is_(False), *access(inc.target_type)]
    if inc.target_type:
        where.insert(0, r.c.res_type == inc.target_type)
    return tx.current_where(where, MAX_INCLUDED + 1)


def _reverse(tx: Tx, frontier: list[Stored], inc: Include, access: AccessFilter) -> list[Stored]:
    """The resources whose `inc.param` references point at the frontier: one statement."""
    ref, r = idx_reference, resource
    pairs = {(x.res_type, x.res_id) for x in frontier}
    conds = [ref.c.res_pk == r.c.pk, ref.c.target_id.in_({i for _t, i in pairs}),
             ref.c.target_type.in_({t for t, _i in pairs})]
    if inc.source_type:
        conds.append(ref.c.res_type == inc.source_type)
    if inc.param != "*":
        conds.append(ref.c.param == inc.param)
    where = [exists().where(*conds), r.c.deleted.is_(False), *access(inc.source_type)]
    if inc.source_type:
        where.insert(0, r.c.res_type == inc.source_type)
    return tx.current_where(where, MAX_INCLUDED + 1)


__all__ = ["MAX_INCLUDED", "MAX_ITERATIONS", "included"]
