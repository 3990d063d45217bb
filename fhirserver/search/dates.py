"""FHIR date/dateTime/instant values as UTC ranges, with the precision the client wrote."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")


# The instants Python can hold, in UTC. FHIR years run 0001-9999, so a value's range (its end,
# or its start once moved to UTC from a +14:00 offset) can fall outside them: such ends are
# clamped to these bounds rather than overflowing, and `9999-12-31` is an ordinary date.
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)


def shift(t: datetime, delta: timedelta) -> datetime:
    """`t + delta`, clamped to [EARLIEST, LATEST] instead of raising OverflowError."""
    try:
        return t + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def _to_utc(t: datetime) -> datetime:
    try:
        return t.astimezone(timezone.utc)
    except OverflowError:
        offset = t.utcoffset() or timedelta(0)
        return EARLIEST if offset > timedelta(0) else LATEST


def _add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    if t.year + y > 9999:
        return datetime.max.replace(tzinfo=t.tzinfo)
    return t.replace(year=t.year + y, month=m + 1)


def date_range(value: str) -> tuple[datetime, datetime]:
    """The half-open UTC interval [low, high) a FHIR date/dateTime/instant denotes.

    A value without a time zone is taken as UTC (the server's zone).
    Raises ValueError for anything that is not a FHIR date.
    """
    m = _DATE_RE.match(value.strip())
    if not m:
        raise ValueError(f"'{value}' is not a FHIR date, dateTime or instant")
    g = m.groupdict()
    tz = timezone.utc
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    year = int(g["y"])
    if g["m"] is None:
        low = datetime(year, 1, 1, tzinfo=tz)
        high = _add_months(low, 12)
    elif g["d"] is None:
        low = datetime(year, int(g["m"]), 1, tzinfo=tz)
        high = _add_months(low, 1)
    elif g["H"] is None:
        low = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
        high = shift(low, timedelta(days=1))
    else:
        base = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), tzinfo=tz)
        if g["S"] is None:
            low, high = base, shift(base, timedelta(minutes=1))
        else:
            low = base.replace(second=int(g["S"]))
            if g["f"]:
                digits = g["f"][1:]
                micro = int((digits + "000000")[:6])
                low = low.replace(microsecond=micro)
                step = timedelta(microseconds=10 ** max(0, 6 - len(digits)))
            else:
                step = timedelta(seconds=1)
            high = shift(low, step)
    return _to_utc(low), _to_utc(high)


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES:
        return value[:2], value[2:]
    return "eq", value
