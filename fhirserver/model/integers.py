"""Whole numbers as clients write them in URLs and headers: ASCII digits, in the database's range.

`str.isdigit()` is true for '²' or '٣', which `int()` refuses, and `int()` takes numbers no
64-bit column holds; both reached the database as 500s. Every count, version id and cursor
is read through `parse_count` so the check is made once, the same way everywhere.
"""
from __future__ import annotations

import re

INT64_MAX = 2 ** 63 - 1
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_count(text: object, maximum: int = INT64_MAX) -> int | None:
    """The non-negative integer `text` spells in ASCII digits, or None (not one, or above `maximum`)."""
    if not isinstance(text, str) or not _ASCII_DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None


def is_count(text: object, maximum: int = INT64_MAX) -> bool:
    """True when `parse_count` would accept `text`."""
    return parse_count(text, maximum) is not None
