"""What one search may ask for: each condition becomes a join or a sub-select, so a URL with a
parameter repeated hundreds of times (or a value list hundreds long) asks the database for
minutes of work. Refused before compiling, as is a NUL character, which no PostgreSQL text
value can hold (the driver fails on it) and which no FHIR value contains.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

MAX_REPEATS = 20          # occurrences of one parameter name in one search (50 dates: 15 s on 20k rows)
MAX_VALUES = 100          # comma-separated values of one occurrence (ORed)
MAX_PARAMS = 200          # parameters in one search, all names together


def search_limit_problem(params: Sequence[tuple[str, str]], max_repeats: int = MAX_REPEATS,
                         max_values: int = MAX_VALUES, max_params: int = MAX_PARAMS) -> str | None:
    """Why these parameters are refused, or None when they are within the limits."""
    if len(params) > max_params:
        return f"A search takes at most {max_params} parameters ({len(params)} given)"
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            return f"Search parameter '{name.replace(chr(0), '')}' contains a NUL character"
        if value.count(",") >= max_values:
            return f"Search parameter '{name}' has more than {max_values} comma-separated values"
    name, times = (Counter(n for n, _v in params).most_common(1) or [("", 0)])[0]
    if times > max_repeats:
        return f"Search parameter '{name}' is repeated {times} times (at most {max_repeats})"
    return None
