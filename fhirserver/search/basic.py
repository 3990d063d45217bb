"""The search parameters every type has (`_id`, `_lastUpdated`) plus `identifier`, compiled to SQL.

The full SearchParameter-driven engine (issue 3) replaces the body of `compile_search`; the
contract stays: request parameters in, SQL conditions plus the list of parameters used out.
`identifier` is matched in the stored JSON (JSONB containment over the `json` column on PostgreSQL, json_each on SQLite)
because conditional create/update/delete and conditional references depend on it.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from datetime import timedelta
from typing import Sequence

from sqlalchemy import and_, bindparam, cast, not_, or_, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.model.jsonio import dumps
from fhirserver.search.dates import date_range, split_prefix
from fhirserver.storage.tables import resource

# Result parameters: they shape the answer, they do not filter.
RESULT_PARAMS = frozenset({
    "_count", "_sort", "_total", "_summary", "_elements", "_format", "_pretty", "_include",
    "_revinclude", "_contained", "_containedType", "_page_after", "_page_before", "_type",
})
FILTER_PARAMS = ("_id", "_lastUpdated", "identifier")


class SearchError(ValueError):
    """A parameter the server cannot honour (unknown under strict handling, or malformed)."""


@dataclasses.dataclass
class CompiledSearch:
    where: list[ColumnElement[bool]]
    used: list[tuple[str, str]]       # filter parameters that were applied (for the self link)
    ignored: list[str]                # parameters left out (lenient handling)


def supported_params(res_type: str) -> list[tuple[str, str, str]]:
    """(name, type, documentation) of the search parameters this compiler honours for a type."""
    out = [("_id", "token", "Logical id of the resource"),
           ("_lastUpdated", "date", "When the resource version last changed")]
    if res_type in _identifier_types():
        out.append(("identifier", "token", "A business identifier (system|value)"))
    return out


def compile_search(res_type: str | None, params: Sequence[tuple[str, str]], *, postgres: bool,
                   strict: bool) -> CompiledSearch:
    where: list[ColumnElement[bool]] = []
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in params:
        base, _, modifier = name.partition(":")
        if base in RESULT_PARAMS:
            continue
        if base == "_id" and not modifier:
            ids = [v for v in value.split(",") if v]
            where.append(resource.c.res_id.in_(ids))
        elif base == "_lastUpdated" and not modifier:
            where.append(or_(*[_date_clause(v) for v in value.split(",")]))
        elif base == "identifier" and modifier == "" and (res_type is None or res_type in _identifier_types()):
            where.append(or_(*[_identifier_clause(v, postgres) for v in value.split(",")]))
        else:
            if strict:
                raise SearchError(f"Unknown or unsupported search parameter '{name}'"
                                  + (f" for {res_type}" if res_type else ""))
            ignored.append(name)
            continue
        used.append((name, value))
    return CompiledSearch(where, used, ignored)


def _date_clause(value: str) -> ColumnElement[bool]:
    prefix, raw = split_prefix(value)
    try:
        low, high = date_range(raw)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    col = resource.c.last_updated
    if prefix == "eq":
        return and_(col >= low, col < high)
    if prefix == "ne":
        return or_(col < low, col >= high)
    if prefix in ("gt", "sa"):
        return col >= high
    if prefix in ("lt", "eb"):
        return col < low
    if prefix == "ge":
        return col >= low
    if prefix == "le":
        return col < high
    slack = max(timedelta(days=1), (high - low) / 10)  # ap: approximately
    return and_(col >= low - slack, col < high + slack)


def _split_token(value: str) -> tuple[str | None, str | None]:
    if "|" in value:
        system, _, code = value.partition("|")
        return system, (code or None)
    return None, value


def _identifier_clause(value: str, postgres: bool) -> ColumnElement[bool]:
    system, code = _split_token(value)
    if system is None and not code:
        raise SearchError("identifier needs a value")
    probe: dict[str, str] = {}
    if system:
        probe["system"] = system
    if code:
        probe["value"] = code
    no_system = system == ""
    if postgres:
        as_list = cast(resource.c.body, JSONB).op("@>")(cast(bindparam(None, dumps({"identifier": [probe]}).decode()), JSONB))
        as_one = cast(resource.c.body, JSONB).op("@>")(cast(bindparam(None, dumps({"identifier": probe}).decode()), JSONB))
        clause = or_(as_list, as_one)
        if no_system:
            clause = and_(clause, not_(text("jsonb_path_exists(CAST(resource.body AS JSONB), '$.identifier[*] ? (@.system != null)')")))
        return clause
    conds = []
    binds = {}
    if system:
        conds.append("json_extract(je.value, '$.system') = :isys")
        binds["isys"] = system
    if no_system:
        conds.append("json_extract(je.value, '$.system') IS NULL")
    if code:
        conds.append("json_extract(je.value, '$.value') = :ival")
        binds["ival"] = code
    sql = ("EXISTS (SELECT 1 FROM json_each(resource.body, CASE json_type(resource.body, '$.identifier') "
           "WHEN 'array' THEN '$.identifier' ELSE '$' END) je WHERE "
           "(json_type(resource.body, '$.identifier') = 'array' OR je.key = 'identifier') AND "
           + " AND ".join(conds) + ")")
    # Unique bind names per clause: several identifier clauses may appear in one query.
    stmt = text(sql)
    unique = {}
    for k, v in binds.items():
        unique[k] = bindparam(k, v, unique=True)
    return stmt.bindparams(*unique.values())


@lru_cache(maxsize=1)
def _identifier_types() -> frozenset[str]:
    """Types whose HL7 SearchParameters include `identifier`."""
    from conformance import load_definition

    out: set[str] = set()
    for entry in load_definition("Bundle-searchParams.json")["entry"]:
        sp = entry["resource"]
        if sp.get("code") == "identifier":
            out.update(sp.get("base", []))
    return frozenset(out)
