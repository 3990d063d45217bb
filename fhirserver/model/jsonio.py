"""FHIR JSON in and out, keeping decimals exactly as written (`6.0` stays `6.0`)."""
from __future__ import annotations

import json
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


def loads(data: bytes | str) -> Any:
    """Parse JSON; decimals become Decimal so their text survives a round trip."""
    try:
        return json.loads(data, parse_float=JsonDecimal, parse_constant=_reject_constant)
    except JsonFormatError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
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
