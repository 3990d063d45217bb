"""Paging cursors: the sort key values of a page's last (or first) row, carried in the links.

A cursor, not an offset, so a page costs what the first page costs and stays correct while data
changes. A cursor edited by hand is refused here (400), never handed to the database.
"""
from __future__ import annotations

import base64
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from fhirserver.errors import bad_request
from fhirserver.model import INT64_MAX, parse_count


def encode_cursor(values: list[Any]) -> str:
    if len(values) == 1 and isinstance(values[0], int):
        return str(values[0])
    tagged = []
    for v in values:
        if isinstance(v, datetime):
            tagged.append({"d": v.isoformat()})
        elif isinstance(v, Decimal):
            tagged.append({"n": str(v)})
        else:
            tagged.append(v)
    return base64.urlsafe_b64encode(orjson.dumps(tagged)).decode().rstrip("=")


def decode_cursor(token: str, kinds: list[str]) -> list[Any]:
    """The sort key values a paging link carries, checked against the search's sort columns.

    `kinds` names each key's type (`flag`, `str`, `date`, `num`, `int`); a cursor edited by
    hand (wrong JSON types, numbers beyond 64 bits, NaN) is refused here, not by the database.
    """
    bad = bad_request("The paging cursor is not one this server made")
    try:
        pk = parse_count(token)
        if pk is not None:
            values: list[Any] = [pk]
        else:
            raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(raw, list):
                raise bad
            values = []
            for v in raw:
                if isinstance(v, dict) and isinstance(v.get("d"), str):
                    values.append(datetime.fromisoformat(v["d"]))
                elif isinstance(v, dict) and isinstance(v.get("n"), str):
                    values.append(Decimal(v["n"]))
                else:
                    values.append(v)
    except (ValueError, TypeError, ArithmeticError, orjson.JSONDecodeError):
        raise bad from None
    if len(values) != len(kinds):
        raise bad_request("The paging cursor does not fit this search (was _sort changed?)")
    if not all(_fits(v, k) for v, k in zip(values, kinds)):
        raise bad
    return values


def _fits(value: Any, kind: str) -> bool:
    if kind in ("flag", "int"):
        return type(value) is int and -INT64_MAX <= value <= INT64_MAX and (kind == "int" or value in (0, 1))
    if kind == "str":
        return isinstance(value, str) and "\x00" not in value
    if kind == "date":
        return isinstance(value, datetime)
    if kind == "num":
        if isinstance(value, float):
            return math.isfinite(value)
        return (isinstance(value, Decimal) and value.is_finite()) or (
            type(value) is int and -INT64_MAX <= value <= INT64_MAX)
    return False


def cursor_kinds(sort: list[Any]) -> list[str]:
    """The type of each cursor value: a missing-value flag and the value per sort key, then pk."""
    kinds: list[str] = []
    for key in sort:
        kinds += ["flag", key.kind]
    return kinds + ["int"]


__all__ = ["cursor_kinds", "decode_cursor", "encode_cursor"]
