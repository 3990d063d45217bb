"""The query compiler: FHIR search parameters -> SQL conditions on the `resource` table.

One predicate builder per parameter type; each predicate is an EXISTS over that type's index
table, so conditions combine freely (AND across parameters, OR across comma-separated values),
nest for chains (`subject:Patient.name=`) and reverse chains (`_has:Observation:patient:code=`),
and carry the caller's access conditions into every table they touch.
"""
from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Sequence

from sqlalchemy import and_, exists, func, literal, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter  # re-targets access conditions onto aliases

from fhirserver.model import R4_RESOURCE_TYPES, is_valid_id, parse_reference
from fhirserver.search import planner
from fhirserver.search.dates import date_range, shift, split_prefix
from fhirserver.search.extract import normalize, split_reference
from fhirserver.search.limits import search_limit_problem
from fhirserver.search.registry import Registry, SearchParam, compartment_params
from fhirserver.storage import (
    idx_date, idx_number, idx_quantity, idx_reference, idx_string, idx_text, idx_token, idx_uri,
    resource, resource_compartment,
)

# Result parameters: they shape the answer, they do not filter.
# Numbers beyond ±1e1000 (or finer than 1e-1000) are no measurement; PostgreSQL's numeric and
# Python's decimal context overflow on them.
MAX_EXPONENT = 1000
RESULT_PARAMS = frozenset({
    "_count", "_sort", "_total", "_summary", "_elements", "_format", "_pretty", "_include",
    "_revinclude", "_contained", "_containedType", "_page_after", "_page_before", "_type",
})
FAR_PAST = datetime(1, 1, 2, tzinfo=timezone.utc)
FAR_FUTURE = datetime(9999, 12, 30, tzinfo=timezone.utc)
MAX_CHAIN = 4
# parameter type -> (index table, column sorted on, cursor value kind)
_SORT_COLUMNS = {"string": (idx_string, "value", "str"), "token": (idx_token, "code", "str"),
                 "date": (idx_date, "low", "date"), "number": (idx_number, "low", "num"),
                 "quantity": (idx_quantity, "low", "num"), "reference": (idx_reference, "target_id", "str"),
                 "uri": (idx_uri, "uri", "str")}

AccessFilter = Callable[[str | None], Sequence[ColumnElement[bool]]]


class SearchError(ValueError):
    """A parameter the server cannot honour (unknown under strict handling, or malformed)."""


class InvalidValue(SearchError):
    """A known parameter with a value that means nothing (`birthdate=1985-13-45`): refused under
    lenient handling too, since ignoring it would answer with every resource."""


class UnsupportedModifier(InvalidValue):
    """A known parameter with a modifier this server does not implement (`name:sounds-like`):
    the spec says servers SHALL reject it, since dropping it would widen the result."""


def _naming(exc: SearchError, name: str) -> SearchError:
    """The same error with the parameter's name in front, unless the message already names it."""
    text = str(exc)
    if f"'{name}'" in text or text.startswith(name):
        return exc
    return type(exc)(f"Search parameter '{name}': {text}")


@dataclasses.dataclass(frozen=True)
class Include:
    source_type: str | None     # `*` -> None
    param: str                  # reference parameter code, or `*`
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclasses.dataclass
class SortKey:
    expr: ColumnElement[Any]
    desc: bool
    kind: str                   # str | date | num | int


@dataclasses.dataclass
class CompiledSearch:
    where: list[ColumnElement[bool]]
    used: list[tuple[str, str]]            # filter parameters applied (for the self link)
    ignored: list[str]                     # parameters left out (lenient handling)
    sort: list[SortKey] = dataclasses.field(default_factory=list)
    sort_param: str | None = None
    includes: list[Include] = dataclasses.field(default_factory=list)


def split_values(raw: str) -> list[str]:
    """Comma-separated OR values, honouring `\\,` escapes."""
    return _split_escaped(raw, ",")


def _split_escaped(value: str, sep: str) -> list[str]:
    """Split on `sep` where it is not escaped with a backslash (FHIR search value escaping)."""
    out, cur, esc = [], [], False
    for ch in value:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise InvalidValue(f"'{text}' is not a number") from None
    if not d.is_finite():
        raise InvalidValue(f"'{text}' is not a number")
    if not -MAX_EXPONENT <= d.as_tuple().exponent <= MAX_EXPONENT or abs(d.adjusted()) > MAX_EXPONENT:
        raise InvalidValue(f"'{text}' is out of the range of numbers this server compares")
    return d


def _precision_range(d: Decimal) -> tuple[Decimal, Decimal]:
    """The implicit range of a number as written: 100 -> [99.5, 100.5), 1.0 -> [0.95, 1.05)."""
    exp = d.as_tuple().exponent
    half = Decimal(5) * (Decimal(10) ** (int(exp) - 1)) if isinstance(exp, int) else Decimal(0)
    return d - half, d + half



@functools.lru_cache(maxsize=None)
def _top_alias(table: Any) -> Any:
    """The alias of an index table in an EXISTS right under the searched `resource` table: one
    per table, built once (an alias builds its column proxies, a large share of compiling a
    search). Sibling EXISTS may share it: each is its own scope. Subqueries under a chain's or
    `_has`'s resource alias take fresh aliases, so no alias ever nests inside itself."""
    return table.alias()

class Compiler:
    """Compiles searches for one registry; `access` gives the caller's conditions per type."""

    def __init__(self, registry: Registry, *, postgres: bool, base_url: str | None = None,
                 access: AccessFilter | None = None) -> None:
        self.registry = registry
        self.postgres = postgres
        self.base_url = base_url
        self.access = access or (lambda _t: ())
        self._single_type: dict[int, str] = {}  # id(resource alias) -> the one type it holds

    # -- entry point ---------------------------------------------------------------------------
    def compile(self, res_type: str | None, params: Sequence[tuple[str, str]], *,
                strict: bool) -> CompiledSearch:
        problem = search_limit_problem(params)
        if problem:
            raise SearchError(problem)
        preds: list[planner.Predicate] = []
        used: list[tuple[str, str]] = []
        ignored: list[str] = []
        types = [res_type] if res_type else None
        seen: set[tuple[str, str]] = set()
        # bounds of a single-valued date parameter: tested together on its one index row
        ranges: dict[str, tuple[SearchParam, list[list[str]]]] = {}
        for name, value in params:
            base = name.split(":", 1)[0].split(".", 1)[0]
            if base in RESULT_PARAMS or (name, value) in seen:  # a repeated condition adds nothing
                continue
            seen.add((name, value))
            single = self._single_date(res_type, name)
            try:
                if single is not None:
                    values = split_values(value)
                    if not values or any(v == "" for v in values):
                        raise SearchError(f"Parameter '{name}' has an empty value")
                    for v in values:
                        self._check_date(v)
                    ranges.setdefault(name, (single, []))[1].append(values)
                    used.append((name, value))
                    continue
                cond = self.param(resource, types, name, value)
            except InvalidValue as exc:
                raise _naming(exc, name) from None
            except SearchError:
                if strict:
                    raise
                ignored.append(name)
                continue
            code, _, modifier = name.partition(".")[0].partition(":")
            p = None if name.startswith("_") else self._maybe_lookup(types, code)
            preds.append(planner.Predicate(cond, planner.estimate(p, code, modifier, value)))
            used.append((name, value))
        for name, (p, groups) in ranges.items():
            self._single_type[id(resource)] = p.base
            cond = self._rows(resource, idx_date, p, lambda t, g=groups: [planner.row_condition(t, g, self.postgres)])
            sel = min(planner.estimate(p, name, "", ",".join(g)) for g in groups)
            if len(groups) > 1:
                sel = sel / 10  # two bounds on one row: a window, much narrower than either
            preds.append(planner.Predicate(cond, sel))
        where = planner.order(preds)
        out = CompiledSearch(where, used, ignored)
        for name, value in params:
            try:
                if name == "_sort":
                    out.sort = self.sort_keys(res_type, value)
                    out.sort_param = value
                elif name in ("_include", "_revinclude") or name.startswith(("_include:", "_revinclude:")):
                    out.includes.append(self.include(name, value))
            except SearchError as exc:
                raise _naming(exc, name) from None
        return out

    # -- one parameter -------------------------------------------------------------------------
    def param(self, r: Any, types: list[str] | None, name: str, raw: str) -> ColumnElement[bool]:
        """The condition of one `name=raw` on the resource table (or alias) `r`."""
        if types and len(types) == 1:
            self._single_type[id(r)] = types[0]
        if name.startswith("_has:"):
            return self._has(r, types, name, raw)
        head, dot, chain = name.partition(".")
        code, _, modifier = head.partition(":")
        if dot:
            return self._chain(r, types, code, modifier, chain, raw)
        if code == "_id":
            return self._id(r, modifier, raw)
        if code == "_lastUpdated":
            if modifier:
                raise UnsupportedModifier(f"_lastUpdated takes no modifier ':{modifier}'")
            return or_(*[self._date_on(r.c.last_updated, r.c.last_updated, v, exclusive_high=False)
                         for v in split_values(raw)])
        if code in ("_text", "_content"):
            return self._fulltext(r, code, modifier, raw)
        param = self._lookup(types, code)
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise InvalidValue(f"{name} must be true or false")
            present = self._any_row(r, param)
            return not_(present) if raw == "true" else present
        values = split_values(raw)
        if not values or any(v == "" for v in values) and param.type != "token":
            raise SearchError(f"Parameter '{name}' has an empty value")
        builder = {
            "string": self._string, "token": self._token, "reference": self._reference,
            "date": self._date, "number": self._number, "quantity": self._quantity, "uri": self._uri,
            "composite": self._composite,
        }.get(param.type)
        if builder is None:
            raise SearchError(f"Search parameter '{code}' of type {param.type} is not supported")
        if param.type == "token" and modifier == "not":
            return not_(or_(*[self._token(r, param, "", v) for v in values]))
        return or_(*[builder(r, param, modifier, v) for v in values])

    def _single_date(self, res_type: str | None, name: str) -> SearchParam | None:
        """The date parameter `name` when it is plain (no modifier, no chain) on a single-valued
        element of `res_type`: its bounds may then share one index row."""
        if res_type is None or ":" in name or "." in name or name.startswith("_"):
            return None
        p = self.registry.get(res_type, name)
        if p is None or p.type != "date" or not planner.single_valued(res_type, p.expression):
            return None
        return p

    @staticmethod
    def _check_date(v: str) -> None:
        try:
            date_range(split_prefix(v)[1])
        except ValueError as exc:
            raise InvalidValue(str(exc)) from None

    def _maybe_lookup(self, types: list[str] | None, code: str) -> SearchParam | None:
        try:
            return self._lookup(types, code)
        except SearchError:
            return None

    def _lookup(self, types: list[str] | None, code: str) -> SearchParam:
        candidates = types or ["Resource"]
        for t in candidates:
            p = self.registry.get(t, code) if t != "Resource" else self.registry.common(code)
            if p is not None:
                return p
        where = ", ".join(types) if types else "every resource type"
        raise SearchError(f"Unknown search parameter '{code}' for {where}")

    def _type_cond(self, table: Any, param: SearchParam) -> ColumnElement[bool]:
        return table.c.param == param.code

    def _rows(self, r: Any, table: Any, param: SearchParam,
              build: Callable[[Any], list[ColumnElement[bool]]] | None = None) -> ColumnElement[bool]:
        """EXISTS over `table` rows of `param` for the resource `r`; `build(alias)` adds conditions."""
        t = _top_alias(table) if r is resource else table.alias()
        extra = build(t) if build else []
        # the constant type lets the planner use the (res_type, param, value) indexes
        typed = [t.c.res_type == param.base] if param.base in R4_RESOURCE_TYPES and \
            self._single_type.get(id(r)) == param.base else []
        return exists().where(t.c.res_pk == r.c.pk, t.c.param == param.code, *typed, *extra)

    def _any_row(self, r: Any, param: SearchParam) -> ColumnElement[bool]:
        table = {"string": idx_string, "token": idx_token, "reference": idx_reference, "date": idx_date,
                 "number": idx_number, "quantity": idx_quantity, "uri": idx_uri}.get(param.type)
        if table is None:
            raise SearchError(f":missing is not supported on '{param.code}'")
        return self._rows(r, table, param)

    # -- builders per type ---------------------------------------------------------------------
    def _id(self, r: Any, modifier: str, raw: str) -> ColumnElement[bool]:
        if modifier not in ("", "not"):
            raise UnsupportedModifier(f"_id takes no modifier ':{modifier}'")
        ids = [v for v in split_values(raw) if v]
        cond = r.c.res_id.in_(ids)
        return not_(cond) if modifier == "not" else cond

    def _string(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        t = idx_string
        if modifier == "exact":
            return self._rows(r, t, p, lambda t: [t.c.exact == v])
        n = _like_escape(normalize(v)[:255])
        if modifier == "contains":
            return self._rows(r, t, p, lambda t: [t.c.value.like(f"%{n}%", escape="\\")])
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on string parameter '{p.code}'")
        return self._rows(r, t, p, lambda t: [t.c.value.like(f"{n}%", escape="\\")])

    def _token(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        t = idx_token
        if modifier == "text":
            n = _like_escape(normalize(v))
            return self._rows(r, t, p, lambda t: [t.c.text.like(f"{n}%", escape="\\")])
        if modifier == "of-type":
            parts = _split_escaped(v, "|")
            if len(parts) != 3:
                raise SearchError(":of-type takes system|code|value")
            return self._rows(r, t, p, lambda t: [t.c.system == f"of-type:{parts[0]}|{parts[1]}", t.c.code == parts[2]])
        if modifier in ("in", "not-in", "above", "below"):
            raise UnsupportedModifier(f"Modifier ':{modifier}' needs terminology services, which this server does not have")
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on token parameter '{p.code}'")
        if v == "":
            raise SearchError(f"Parameter '{p.code}' has an empty value")
        lower = "telecom" in (p.expression or "")
        parts = _split_escaped(v, "|")
        if len(parts) > 2 or parts == ["", ""]:  # a literal | inside a code is written \|
            raise InvalidValue(f"'{v}' is not a token (code, system|code, |code or system|)")
        if len(parts) == 1:
            code = parts[0].lower() if lower else parts[0]
            return self._rows(r, t, p, lambda t: [t.c.code == code,
                                                  not_(t.c.system.like("of-type:%")) | t.c.system.is_(None)])
        system, code = parts[0], "|".join(parts[1:])
        code = code.lower() if lower else code
        def build(t: Any) -> list[ColumnElement[bool]]:
            conds = [t.c.system.is_(None) if system == "" else t.c.system == system]
            if code:
                conds.append(t.c.code == code)
            return conds

        return self._rows(r, t, p, build)

    def _reference(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        t = idx_reference
        if modifier == "identifier":
            ident = dataclasses.replace(p, code=f"{p.code}:identifier", type="token")
            return self._token(r, ident, "", v)
        if modifier and modifier not in R4_RESOURCE_TYPES:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on reference parameter '{p.code}'")
        ref = parse_reference(v, self.base_url)
        if ref.kind == "invalid" and not ("/" not in v and is_valid_id(v)):  # neither Type/id, URL nor id
            raise InvalidValue(f"'{v}' is not a reference (id, Type/id, or an absolute URL)")
        ttype, tid, url = split_reference(v, self.base_url)
        if ttype is None and url is None:  # a bare id
            tid = v
        if url is not None and ttype is None:
            if "/" not in v:
                tid = v
            else:
                return self._rows(r, t, p, lambda t: [t.c.url == url])
        wanted = modifier or ttype
        return self._rows(r, t, p, lambda t: [t.c.target_id == tid] + ([t.c.target_type == wanted] if wanted else []))

    def _date_on(self, low_col: Any, high_col: Any, v: str, exclusive_high: bool = True) -> ColumnElement[bool]:
        prefix, raw = split_prefix(v)
        try:
            lo, hi = date_range(raw)
        except ValueError as exc:
            raise InvalidValue(str(exc)) from None
        low = func.coalesce(low_col, FAR_PAST) if low_col is not None else None
        high = func.coalesce(high_col, FAR_FUTURE)
        if not exclusive_high:  # a point in time (lastUpdated): its range is [t, t]
            low = low_col
            if prefix == "eq":
                return and_(low >= lo, low < hi)
            if prefix == "ne":
                return or_(low < lo, low >= hi)
            if prefix in ("gt", "sa"):
                return low >= hi
            if prefix in ("lt", "eb"):
                return low < lo
            if prefix == "ge":
                return low >= lo
            if prefix == "le":
                return low < hi
            slack = max(timedelta(days=1), (hi - lo) / 10)
            return and_(low >= shift(lo, -slack), low < shift(hi, slack))
        if prefix == "eq":
            return and_(low >= lo, high <= hi)
        if prefix == "ne":
            return not_(and_(low >= lo, high <= hi))
        if prefix == "gt":
            return high > hi
        if prefix == "lt":
            return low < lo
        if prefix == "ge":
            return high > lo
        if prefix == "le":
            return low < hi
        if prefix == "sa":
            return low >= hi
        if prefix == "eb":
            return high <= lo
        # ap: within 10% of the gap between now and the value (at least a day), as R4 suggests
        gap = abs(datetime.now(timezone.utc) - lo)
        slack = max(timedelta(days=1), gap / 10)
        return and_(low < shift(hi, slack), high > shift(lo, -slack))

    def _date(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on date parameter '{p.code}'")
        self._check_date(v)  # validate the value now (the condition itself is built per alias)
        return self._rows(r, idx_date, p, lambda t: [planner.row_condition(t, [[v]], self.postgres)])

    def _num_cond(self, col: Any, v: str) -> ColumnElement[bool]:
        prefix, raw = split_prefix(v)
        d = _decimal(raw)
        lo, hi = _precision_range(d)
        if prefix == "eq":
            return and_(col >= lo, col < hi)
        if prefix == "ne":
            return or_(col < lo, col >= hi)
        if prefix in ("gt", "sa"):
            return col > d
        if prefix in ("lt", "eb"):
            return col < d
        if prefix == "ge":
            return col >= d
        if prefix == "le":
            return col <= d
        slack = abs(d) / 10  # ap
        return and_(col >= d - slack, col <= d + slack)

    def _number(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on number parameter '{p.code}'")
        self._num_cond(literal(0), v)  # validate the value now
        return self._rows(r, idx_number, p, lambda t: [self._num_cond(t.c.low, v)])

    def _quantity(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on quantity parameter '{p.code}'")
        parts = _split_escaped(v, "|")
        if len(parts) not in (1, 3):
            raise InvalidValue("A quantity is number, or number|system|code")
        self._num_cond(literal(0), parts[0])  # validate the number now

        def build(t: Any) -> list[ColumnElement[bool]]:
            conds = [self._num_cond(t.c.low, parts[0])]
            if len(parts) == 3:
                if parts[1]:
                    conds.append(t.c.system == parts[1])
                if parts[2]:
                    conds.append(t.c.code == parts[2])
            return conds

        return self._rows(r, idx_quantity, p, build)

    def _uri(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        t = idx_uri
        if modifier == "below":
            return self._rows(r, t, p, lambda t: [t.c.uri.like(_like_escape(v.rstrip("/")) + "%", escape="\\")])
        if modifier == "above":
            return self._rows(r, t, p, lambda t: [literal(v).like(func.replace(t.c.uri, "%", "") + "%")])
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on uri parameter '{p.code}'")
        return self._rows(r, t, p, lambda t: [t.c.uri == v])

    def _composite(self, r: Any, p: SearchParam, modifier: str, v: str) -> ColumnElement[bool]:
        """Composite values `a$b`: each component must match (on the same resource)."""
        if modifier:
            raise UnsupportedModifier(f"Modifier ':{modifier}' is not supported on composite parameter '{p.code}'")
        values = _split_escaped(v, "$")
        if len(values) != len(p.components):
            raise SearchError(f"'{p.code}' takes {len(p.components)} values separated by $")
        conds = []
        for comp, value in zip(p.components, values):
            sub = self.registry.get(p.base, comp.code)
            if sub is None:
                raise SearchError(f"Composite '{p.code}' uses an unknown parameter '{comp.code}'")
            conds.append(self.param(r, [p.base], comp.code, value.replace(",", "\\,")))
        return and_(*conds)

    def _fulltext(self, r: Any, code: str, modifier: str, raw: str) -> ColumnElement[bool]:
        if modifier:
            raise UnsupportedModifier(f"{code} takes no modifier")
        alts = []
        for value in split_values(raw):
            words = [w for w in normalize(value).split() if w]
            if not words:
                raise SearchError(f"{code} needs words to look for")
            t = idx_text.alias()
            tc = t.c.narrative if code == "_text" else t.c.content
            alts.append(exists().where(t.c.res_pk == r.c.pk, *[tc.like(f"%{_like_escape(w)}%", escape="\\")
                                                                for w in words]))
        return or_(*alts)

    # -- chains --------------------------------------------------------------------------------
    def _chain(self, r: Any, types: list[str] | None, code: str, modifier: str, rest: str,
               raw: str, depth: int = 1) -> ColumnElement[bool]:
        if depth > MAX_CHAIN:
            raise SearchError(f"Chains deeper than {MAX_CHAIN} are not supported")
        p = self._lookup(types, code)
        if p.type != "reference":
            raise SearchError(f"'{code}' is not a reference parameter, so it cannot be chained")
        if modifier and modifier not in R4_RESOURCE_TYPES:
            raise SearchError(f"'{code}:{modifier}' is not a resource type for a chain")
        next_name = rest.split(".", 1)[0].split(":", 1)[0]
        targets = [modifier] if modifier else [t for t in (p.targets or sorted(R4_RESOURCE_TYPES))
                                              if self.registry.get(t, next_name) or next_name in ("_id", "_lastUpdated")]
        if not targets:
            raise SearchError(f"No target of '{code}' has a search parameter '{next_name}'")
        ref = idx_reference.alias()
        target = resource.alias()
        inner = self.param(target, targets, rest, raw)
        access = [ClauseAdapter(target).traverse(c) for c in self.access(targets[0] if len(targets) == 1 else None)]
        return exists().where(
            ref.c.res_pk == r.c.pk, ref.c.param == p.code, ref.c.target_type.in_(targets),
            target.c.res_type == ref.c.target_type, target.c.res_id == ref.c.target_id,
            target.c.deleted.is_(False), inner, *access)

    def _has(self, r: Any, types: list[str] | None, name: str, raw: str) -> ColumnElement[bool]:
        parts = name.split(":", 3)
        if len(parts) < 4 or parts[1] not in R4_RESOURCE_TYPES:
            raise SearchError(f"'{name}' is not _has:Type:reference:parameter")
        _, src_type, ref_code, rest = parts
        p = self.registry.get(src_type, ref_code)
        if p is None or p.type != "reference":
            raise SearchError(f"'{ref_code}' is not a reference parameter of {src_type}")
        src = resource.alias()
        ref = idx_reference.alias()
        inner = self.param(src, [src_type], rest, raw)
        access = [ClauseAdapter(src).traverse(c) for c in self.access(src_type)]
        conds = [src.c.res_type == src_type, src.c.deleted.is_(False), ref.c.res_pk == src.c.pk,
                 ref.c.param == ref_code, ref.c.target_id == r.c.res_id, inner, *access]
        conds.append(ref.c.target_type == r.c.res_type)
        return exists().where(*conds)

    # -- compartments --------------------------------------------------------------------------
    @staticmethod
    def compartment(comp_type: str, comp_id: str, res_type: str | None) -> ColumnElement[bool]:
        """Membership of the searched resources in one compartment (`/Patient/123/Observation`)."""
        defs = compartment_params().get(comp_type)
        if defs is None:
            raise SearchError(f"{comp_type} is not a compartment")
        if res_type is not None and res_type not in defs and res_type != comp_type:
            raise SearchError(f"{res_type} is not in the {comp_type} compartment")
        rc = resource_compartment.alias()
        return exists().where(rc.c.res_pk == resource.c.pk, rc.c.comp_type == comp_type, rc.c.comp_id == comp_id)

    @staticmethod
    def compartment_types(comp_type: str) -> list[str]:
        return sorted(set(compartment_params().get(comp_type, {})) | {comp_type})

    @staticmethod
    def of_types(types: Sequence[str]) -> ColumnElement[bool]:
        """The searched resources are of one of `types` (`_type`, a `/Patient/1/*` compartment)."""
        return resource.c.res_type.in_(list(types))

    # -- sorting and includes ------------------------------------------------------------------
    def sort_keys(self, res_type: str | None, raw: str) -> list[SortKey]:
        keys = []
        items = [s.strip() for s in raw.split(",")]
        if not items or any(not i for i in items):
            raise InvalidValue(f"_sort has an empty item: '{raw}'")
        for item in items:
            desc = item.startswith("-")
            code = item[1:] if desc else item
            if not code:
                raise InvalidValue(f"_sort has a '-' without a parameter: '{raw}'")
            if code == "_id":
                keys.append(SortKey(resource.c.res_id, desc, "str"))
                continue
            if code == "_lastUpdated":
                keys.append(SortKey(resource.c.last_updated, desc, "date"))
                continue
            p = self._lookup([res_type] if res_type else None, code)
            agg = func.max if desc else func.min
            spec = _SORT_COLUMNS.get(p.type)
            if spec is None:
                raise SearchError(f"Cannot sort by '{code}' ({p.type})")
            table, column, kind = spec
            t = table.alias()
            col = t.c.high if (p.type == "date" and desc) else t.c[column]
            sub = select(agg(col)).where(t.c.res_pk == resource.c.pk, t.c.param == p.code).scalar_subquery()
            keys.append(SortKey(sub, desc, kind))
        return keys

    def include(self, name: str, value: str) -> Include:
        reverse = name.startswith("_revinclude")
        iterate = name.endswith(":iterate") or name.endswith(":recurse")
        if value == "*":
            return Include(None, "*", None, iterate, reverse)
        parts = value.split(":")
        if len(parts) not in (2, 3) or (parts[0] not in R4_RESOURCE_TYPES and parts[0] != "*"):
            raise SearchError(f"{name}={value} is not Type:parameter[:targetType]")
        src = None if parts[0] == "*" else parts[0]
        if parts[1] != "*" and src is not None:
            p = self.registry.get(src, parts[1])
            if p is None or p.type != "reference":
                raise SearchError(f"{name}: '{parts[1]}' is not a reference parameter of {src}")
        target = parts[2] if len(parts) == 3 else None
        if target is not None and target not in R4_RESOURCE_TYPES:
            raise SearchError(f"{name}: '{target}' is not a resource type")
        return Include(src, parts[1], target, iterate, reverse)


__all__ = ["Compiler", "CompiledSearch", "Include", "RESULT_PARAMS", "SearchError", "SortKey",
           "split_values"]
