"""The search planner: what each filter costs, which runs first, and date bounds as one range.

PostgreSQL's own optimizer reorders the semi-joins a search compiles to, but only as well as its
estimates; SQLite mostly evaluates correlated conditions in the order they are written. So the
planner (1) orders predicates by an estimated fraction of matching resources, most selective
first, and (2) hands the database conditions it can estimate: the bounds of a single-valued date
parameter (`birthdate=ge1980-03-01&birthdate=lt1980-03-08`) become one range on one index row
(`span && [1980-03-01, 1980-03-08)`), which the GiST range index answers and PostgreSQL's range
statistics estimate, where two half-open bounds on separate rows looked like half the table each.
"""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Sequence

from sqlalchemy import DateTime, and_, case, cast, func, literal, literal_column, not_, or_, true
from sqlalchemy.dialects.postgresql import TSTZRANGE
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.model import schema_table as schema
from fhirserver.search.dates import date_range, shift, split_prefix
from fhirserver.search.registry import SearchParam, _split_top

FAR_PAST = datetime(1, 1, 2, tzinfo=timezone.utc)
FAR_FUTURE = datetime(9999, 12, 30, tzinfo=timezone.utc)
# What one index row of a date parameter spans on PostgreSQL: NULL ends are open, and a
# reversed Period (end before start, bad data) is empty rather than an error on insert. The
# GiST index `ix_idx_date_span` (migration 0016_search) is on exactly this expression. A row of
# one instant (low = high: a value clamped at the ends of the calendar) is that point, not the
# empty range '[)' would make of it.
SPAN_SQL = "(CASE WHEN low > high THEN 'empty'::tstzrange WHEN low = high THEN tstzrange(low, high, '[]') ELSE tstzrange(low, high, '[)') END)"

# Rough fractions of a type's resources one value matches, by parameter type and modifier.
# They only need to rank predicates against each other, not to be right.
_TYPE_SELECTIVITY = {"token": 0.02, "reference": 0.001, "string": 0.01, "date": 0.05, "number": 0.1,
                     "quantity": 0.1, "uri": 0.05, "composite": 0.01, "special": 0.3}
# Tokens that name one resource (identifiers, emails, phone numbers).
_IDENTIFYING = re.compile(r"identifier|email|phone|telecom|^_id$|^url$|accession")
_LOW_CARDINALITY = frozenset({"gender", "status", "active", "deceased", "intent", "priority", "_tag",
                              "_security", "category", "class", "type"})


@dataclasses.dataclass
class Predicate:
    """One filter condition of a search and the fraction of resources it is expected to keep."""

    cond: ColumnElement[bool]
    selectivity: float


def estimate(p: SearchParam | None, name: str, modifier: str, raw: str) -> float:
    """The fraction of resources `name=raw` keeps (heuristic; lower runs first)."""
    values = [v for v in raw.split(",") if v] or [""]
    if name.startswith("_has:"):
        one = 0.05
    elif "." in name:  # a chain: as selective as its end, but a join deeper
        one = 0.01
    elif name == "_id":
        one = 1e-6
    elif name in ("_text", "_content") or modifier in ("missing", "not", "contains", "text", "above", "below"):
        one = 0.5
    elif p is None:
        one = 0.3
    elif p.type == "token" and _IDENTIFYING.search(p.code) or p.type == "token" and "|" in raw \
            and p.code not in _LOW_CARDINALITY:
        one = 1e-5
    elif p.type == "token" and p.code in _LOW_CARDINALITY:
        one = 0.3
    elif p.type == "string":
        one = max(1e-5, 0.3 * 0.3 ** len(values[0]))
    elif p.type == "date":
        one = _date_selectivity(values[0])
    else:
        one = _TYPE_SELECTIVITY.get(p.type, 0.3)
    return min(1.0, one * len(values))


def _date_selectivity(value: str) -> float:
    prefix, raw = split_prefix(value)
    if prefix in ("ge", "gt", "le", "lt", "sa", "eb", "ne"):
        return 0.5
    try:
        lo, hi = date_range(raw)
    except ValueError:
        return 0.5
    return max(1e-4, min(0.5, (hi - lo) / timedelta(days=365 * 50)))


def order(preds: Sequence[Predicate]) -> list[ColumnElement[bool]]:
    """Conditions most selective first (stable: equal estimates keep the client's order)."""
    return [p.cond for p in sorted(preds, key=lambda p: p.selectivity)]


# -- single-valued parameters ----------------------------------------------------------------
_AS = re.compile(r"^\((.+)\s+as\s+[A-Za-z]+\)$")
_AS_FN = re.compile(r"\.(?:as|ofType)\([A-Za-z]+\)$")


@lru_cache(maxsize=4096)
def single_valued(res_type: str, expression: str | None) -> bool:
    """Whether a date parameter's expression yields at most one value per resource (so at most
    one index row): then AND-ed bounds on it may be tested on that one row. Conservative:
    anything but a plain path of non-repeating elements (no Timing) says no."""
    if not expression:
        return False
    parts = _split_top(expression)
    if len(parts) != 1:
        return False
    path = parts[0].strip()
    m = _AS.match(path)
    if m:
        path = m.group(1).strip()
    path = _AS_FN.sub("", path)
    steps = path.split(".")
    if steps[0] != res_type or len(steps) < 2 or not all(re.fullmatch(r"[A-Za-z]+", s) for s in steps[1:]):
        return False
    info = schema().resource(res_type)
    for i, step in enumerate(steps[1:]):
        if info is None:
            return False
        elements = [e for n, e in info.elements.items() if n == step or e.choice == step]
        if not elements or any(e.is_list for e in elements):
            return False
        if any("Timing" in str(e.model) or e.name.endswith("Timing") for e in elements):
            return False
        if i < len(steps) - 2:
            if len(elements) != 1:
                return False
            info = schema().child(elements[0])
    return True


# -- date bounds -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Bound:
    """A date value's test on a row's span [low, high): overlaps [a, b), lies within it, or not."""

    kind: str                 # overlap | within | outside
    a: datetime | None        # None: open
    b: datetime | None


def bound(value: str) -> Bound:
    """The test `date=value` makes on one index row (the FHIR R4 prefix semantics on ranges)."""
    prefix, raw = split_prefix(value)
    lo, hi = date_range(raw)  # ValueError for a bad date: the compiler reports it
    if prefix == "eq":
        return Bound("within", lo, hi)
    if prefix == "ne":
        return Bound("outside", lo, hi)
    if prefix == "gt":
        return Bound("overlap", hi, None)
    if prefix == "lt":
        return Bound("overlap", None, lo)
    if prefix == "ge":
        return Bound("overlap", lo, None)
    if prefix == "le":
        return Bound("overlap", None, hi)
    if prefix == "sa":
        return Bound("within", hi, None)
    if prefix == "eb":
        return Bound("within", None, lo)
    # ap: within 10% of the gap between now and the value (at least a day), as R4 suggests
    slack = max(timedelta(days=1), abs(datetime.now(timezone.utc) - lo) / 10)
    return Bound("overlap", shift(lo, -slack), shift(hi, slack))


def _later(x: datetime | None, y: datetime | None) -> datetime | None:
    return y if x is None else x if y is None else max(x, y)


def _earlier(x: datetime | None, y: datetime | None) -> datetime | None:
    return y if x is None else x if y is None else min(x, y)


def combine(bounds: Sequence[Bound]) -> list[Bound]:
    """AND-ed tests on one row, with all overlaps (and all withins) folded into one range each
    where the folded range is not empty (`ge2000&le1990` stays two tests: a span over the
    whole decade meets both)."""
    out: list[Bound] = []
    for kind in ("overlap", "within"):
        same = [b for b in bounds if b.kind == kind]
        if not same:
            continue
        a, b = None, None
        for x in same:
            a, b = _later(a, x.a), _earlier(b, x.b)
        if a is None or b is None or a < b:
            out.append(Bound(kind, a, b))
        else:
            out.extend(same)
    out.extend(b for b in bounds if b.kind == "outside")
    return out


def _span(t: Any) -> ColumnElement[Any]:
    """SPAN_SQL on the alias `t`, with constants (not bound parameters) so it is the indexed
    expression."""
    return case((t.c.low > t.c.high, literal_column("'empty'::tstzrange", TSTZRANGE)),
                (t.c.low == t.c.high, func.tstzrange(t.c.low, t.c.high, literal_column("'[]'"), type_=TSTZRANGE)),
                else_=func.tstzrange(t.c.low, t.c.high, literal_column("'[)'"), type_=TSTZRANGE))


def _at(x: datetime | None) -> ColumnElement[Any]:
    return cast(literal(x, DateTime(timezone=True)), DateTime(timezone=True))


def span_condition(t: Any, b: Bound, postgres: bool) -> ColumnElement[bool]:
    """One test on the index row `t` (an `idx_date` alias)."""
    if postgres:
        q = func.tstzrange(_at(b.a), _at(b.b), literal_column("'[)'"), type_=TSTZRANGE)
        if b.kind == "overlap":
            return _span(t).op("&&")(q)
        inside = _span(t).op("<@")(q)
        return inside if b.kind == "within" else not_(inside)
    low = func.coalesce(t.c.low, FAR_PAST)
    high = func.coalesce(t.c.high, FAR_FUTURE)
    if b.kind == "overlap":
        conds = ([high > b.a] if b.a is not None else []) + ([low < b.b] if b.b is not None else [])
        return and_(*conds) if conds else true()
    within = ([low >= b.a] if b.a is not None else []) + ([high <= b.b] if b.b is not None else [])
    inside = and_(*within) if within else true()
    return inside if b.kind == "within" else not_(inside)


def row_condition(t: Any, groups: Sequence[Sequence[str]], postgres: bool) -> ColumnElement[bool]:
    """AND over `groups`, each an OR of date values, all tested on the one row `t`."""
    single = [g[0] for g in groups if len(g) == 1]
    conds = [span_condition(t, b, postgres) for b in combine([bound(v) for v in single])]
    for g in groups:
        if len(g) > 1:
            conds.append(or_(*[span_condition(t, b, postgres) for b in map(bound, g)]))
    return and_(*conds)


__all__ = ["Bound", "Predicate", "SPAN_SQL", "bound", "combine", "estimate", "order", "row_condition",
           "single_valued", "span_condition"]
