"""OperationOutcome errors: every failure a client can cause leaves as one of these."""
from __future__ import annotations

from typing import Any, Iterable

from fhirserver.model.text import printable
from fhirserver.model.validate import Issue


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
