"""FHIR date/dateTime/instant values as UTC ranges, with the precision the client wrote."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")


def _add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
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
        high = low.replace(year=year + 1)
    elif g["d"] is None:
        low = datetime(year, int(g["m"]), 1, tzinfo=tz)
        high = _add_months(low, 1)
    elif g["H"] is None:
        low = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
        high = low + timedelta(days=1)
    else:
        base = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), tzinfo=tz)
        if g["S"] is None:
            low, high = base, base + timedelta(minutes=1)
        else:
            low = base.replace(second=int(g["S"]))
            if g["f"]:
                digits = g["f"][1:]
                micro = int((digits + "000000")[:6])
                low = low.replace(microsecond=micro)
                step = timedelta(microseconds=10 ** max(0, 6 - len(digits)))
            else:
                step = timedelta(seconds=1)
            high = low + step
    return low.astimezone(timezone.utc), high.astimezone(timezone.utc)


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value
