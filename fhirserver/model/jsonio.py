"""FHIR JSON in and out, keeping decimals exactly as written (`6.0` stays `6.0`)."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class JsonFormatError(ValueError):
    """The body is not JSON, or not a JSON object."""


def _reject_constant(name: str) -> Any:
    raise JsonFormatError(f"{name} is not allowed in FHIR JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON; decimals become Decimal so their text survives a round trip."""
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
    except JsonFormatError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonFormatError(f"Body is not valid JSON: {exc}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        text = str(obj)
        if "E" in text or "e" in text:  # JSON allows exponents, FHIR decimals are plain
            text = format(obj, "f")
        return orjson.Fragment(text)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON bytes."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(obj, default=_default, option=option)
