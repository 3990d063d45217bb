"""OperationOutcome errors: every failure a client can cause leaves as one of these.

A leaf module (it imports nothing of the server), so every layer may raise `FhirError` without
importing the layers above it.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

# Characters FHIR strings cannot carry (XML 1.0 has no way to write them; PostgreSQL text holds no NUL).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass(frozen=True)
class Issue:
    """One problem, in OperationOutcome terms."""

    severity: str
    code: str
    diagnostics: str
    expression: str | None = None


def printable(text: str) -> str:
    """`text` with every character FHIR strings cannot carry replaced by U+FFFD.

    For messages that quote what a client sent (an OperationOutcome naming a bad parameter),
    so the answer itself can be written as XML.
    """
    return NOT_XML.sub("\ufffd", text)


class FhirError(Exception):
    """An error answer: HTTP status plus OperationOutcome issues (and optional extra headers)."""

    def __init__(self, status: int, issues: Iterable[Issue] | str, code: str = "processing",
                 headers: dict[str, str] | None = None) -> None:
        if isinstance(issues, str):
            issues = [Issue("error", code, issues)]
        self.status = status
        self.issues = list(issues)
        self.headers = headers or {}
        super().__init__("; ".join(i.diagnostics for i in self.issues))


def outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for the given issues."""
    out = []
    for i in issues:
        entry: dict[str, Any] = {"severity": i.severity, "code": i.code, "diagnostics": printable(i.diagnostics)}
        if i.expression:
            entry["expression"] = [printable(i.expression)]
            entry["location"] = [printable(i.expression)]
        out.append(entry)
    return {"resourceType": "OperationOutcome", "issue": out}


def info(message: str, code: str = "informational") -> dict[str, Any]:
    return outcome([Issue("information", code, message)])


def not_found(res_type: str, res_id: str) -> FhirError:
    return FhirError(404, f"Resource {res_type}/{res_id} is not known", "not-found")


def bad_request(message: str, code: str = "invalid") -> FhirError:
    return FhirError(400, message, code)


__all__ = ["FhirError", "Issue", "NOT_XML", "bad_request", "info", "not_found", "outcome", "printable"]
