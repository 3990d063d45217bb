"""Choosing a patient to attach something to (an unmatched study, a report without a patient):
the same search as the patient list, through the staff member's policy."""
from __future__ import annotations

from typing import Any

from console import core
from console.patients import query_params


def candidates(q: str, exclude: str | None = None) -> list[dict[str, Any]]:
    params = query_params(q) if q.strip() else []
    rows = core.fhir().search("Patient", params + [("active:not", "false"), ("_count", "25")])
    return [r for r in rows if r["id"] != exclude and not is_unreconciled(r)]


def is_unreconciled(p: dict[str, Any]) -> bool:
    return any(t.get("code") == "unreconciled" for t in (p.get("meta") or {}).get("tag") or [])
