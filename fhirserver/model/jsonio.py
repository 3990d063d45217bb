"""FHIR JSON in and out, keeping decimals exactly as written (`6.0` stays `6.0`)."""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson


class JsonFormatError(ValueError):
    """The body is not JSON, or not a JSON object."""


class JsonDecimal(Decimal):
    """A Decimal that remembers the exact text it was parsed from (`1e3` stays `1e3`)."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "JsonDecimal":
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _reject_constant(name: str) -> Any:
    raise JsonFormatError(f"{name} is not allowed in FHIR JSON")


# FHIR resources nest a few dozen levels at most (Questionnaire items, extensions on extensions);
# the parser and every walk over the result recurse, so a body nested deeper is refused before
# parsing rather than ending in a RecursionError.
MAX_DEPTH = 100
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def check_depth(data: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonFormatError when arrays/objects in `data` nest deeper than `max_depth`."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return
    if b"\\" in data:  # escaped quotes: find the strings with the (slower) pattern
        outside = _STRING.sub(b"", data)
    else:  # every quote opens or closes a string: the text outside them is every other piece
        outside = b"".join(data.split(b'"')[::2])
    brackets = outside.translate(_ONE_KIND, _NOT_BRACKET)
    for _level in range(max_depth):  # each round removes the innermost level
        if not brackets:
            return
        peeled = brackets.replace(b"[]", b"")
        if peeled == brackets:
            return  # unbalanced: not JSON, which the parser reports
        brackets = peeled
    if brackets.replace(b"[]", b"") != brackets:
        raise JsonFormatError(f"The JSON nests deeper than {max_depth} levels")


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON; decimals become Decimal so their text survives a round trip."""
    try:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        check_depth(raw, max_depth)
        return json.loads(raw, parse_float=JsonDecimal, parse_constant=_reject_constant)
    except JsonFormatError:
        raise
    except RecursionError:
        raise JsonFormatError("The JSON nests too deeply") from None
    except (ValueError, UnicodeError) as exc:
        raise JsonFormatError(f"Body is not valid JSON: {exc}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # the text as written (6.0, 1.50, 1E-22); a computed Decimal prints itself
        return orjson.Fragment(getattr(obj, "text", None) or str(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON bytes."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(obj, default=_default, option=option)


class Raw(str):
    """Stored JSON text that goes into an answer without being parsed again."""
