"""Index rows for `Binary.securityContext`: the resource a Binary takes its access rules from.

HL7 defines no SearchParameter on Binary, so a Binary's link to its patient would be invisible
to the compartments and to the access gate, and every Binary would be "nobody's data". The
FHIR rule is that a Binary is as sensitive as its `securityContext`: so a link to a Patient makes
the Binary a member of that Patient's compartment (it is the patient's data for every rule that
reads compartments: access, `$everything`, erasure, audit), and any local link is kept as a
reference row (param `securityContext`, searchable by no one) that the access gate follows when
the context is another resource (a DocumentReference).
"""
from __future__ import annotations

from typing import Any

from fhirserver.model import parse_reference

PARAM = "securityContext"


def security_context_rows(res_type: str, body: dict[str, Any],
                          base: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(compartment rows, reference rows) a Binary's securityContext adds to its index."""
    if res_type != "Binary" or not isinstance(body, dict):
        return [], []
    ref = parse_reference(body.get("securityContext"), base)
    if not ref.local:
        return [], []
    refs = [{"param": PARAM, "target_type": ref.res_type, "target_id": ref.res_id, "url": None}]
    comps = [{"comp_type": "Patient", "comp_id": ref.res_id}] if ref.res_type == "Patient" else []
    return comps, refs


__all__ = ["PARAM", "security_context_rows"]
