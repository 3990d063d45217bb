"""What a stored value may hold so that every format can give it back.

FHIR strings travel as JSON and as XML 1.0; XML cannot carry most control characters, U+FFFE,
U+FFFF or lone surrogates, and PostgreSQL cannot store NUL in text at all. A resource holding
one would be accepted in JSON and then fail every XML read (or the write itself, on
PostgreSQL), so such values are refused when written. Strings and numbers have a size limit
too: each is indexed and compared, and a megabyte-long name or a 1e999999 is no clinical data.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhirserver.errors import NOT_XML as _NOT_XML, Issue, printable
from fhirserver.model.types import R4_RESOURCE_TYPES

MAX_STRING = 1024 * 1024        # characters in one string (base64 `data` excepted: the body limit holds)
MAX_EXPONENT = 1000             # decimals beyond ±1e1000 or finer than 1e-1000
_UNLIMITED_KEYS = frozenset({"data"})   # Attachment.data, Binary.data: base64 content


def bad_character(value: str) -> str | None:
    """The first character of `value` no FHIR string may hold (as U+XXXX), or None."""
    m = _NOT_XML.search(value)
    return f"U+{ord(m.group()):04X}" if m else None


def _surely_clean(data: Any, max_string: int) -> bool:
    """True when `value_issues` finds nothing, decided without building a path per value (every
    write runs this; a False only means the exact walk below runs and says what is wrong)."""
    strings: list[str] = []
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is str:
            if len(node) > max_string:
                return False
            strings.append(node)
        elif kind is dict:
            if node is not data and "resourceType" in node:
                rt = node["resourceType"]
                if not isinstance(rt, str) or rt not in R4_RESOURCE_TYPES:
                    return False
            strings.extend(node)
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
        elif isinstance(node, Decimal):
            exp = node.as_tuple().exponent
            if not node.is_finite() or not isinstance(exp, int) or abs(exp) > MAX_EXPONENT \
                    or abs(node.adjusted()) > MAX_EXPONENT:
                return False
    # the forbidden characters are single code points: none in the parts, none in the whole
    return _NOT_XML.search("".join(strings)) is None


def value_issues(data: Any, path: str, max_string: int = MAX_STRING) -> list[Issue]:
    """Strings, keys, numbers and nested resource types in `data` that cannot be stored and served."""
    if _surely_clean(data, max_string):
        return []
    issues: list[Issue] = []
    stack: list[tuple[str, Any, str]] = [(path, data, "")]
    while stack and len(issues) < 20:
        where, node, key = stack.pop()
        if isinstance(node, dict):
            rt = node.get("resourceType")
            if where != path and rt is not None and (not isinstance(rt, str) or rt not in R4_RESOURCE_TYPES):
                issues.append(Issue("error", "not-supported", f"{where}: unknown resource type '{rt}'", where))
                continue
            for k, v in node.items():
                bad = bad_character(k)
                if bad:
                    issues.append(Issue("error", "value", f"{where}: a property name holds {bad}", where))
                    continue
                stack.append((f"{where}.{k}", v, k))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", v, key) for i, v in enumerate(node))
        elif isinstance(node, str):
            bad = bad_character(node)
            if bad:
                issues.append(Issue("error", "value", f"{where}: holds the character {bad}, which FHIR "
                                    "strings cannot carry (XML 1.0 has no way to write it)", where))
            elif len(node) > max_string and key not in _UNLIMITED_KEYS:
                issues.append(Issue("error", "too-long", f"{where}: longer than {max_string} characters", where))
        elif isinstance(node, Decimal):
            exp = node.as_tuple().exponent
            if not node.is_finite() or not isinstance(exp, int) or abs(exp) > MAX_EXPONENT \
                    or abs(node.adjusted()) > MAX_EXPONENT:
                issues.append(Issue("error", "value", f"{where}: the number is out of range", where))
    return issues


__all__ = ["MAX_EXPONENT", "MAX_STRING", "bad_character", "printable", "value_issues"]
