"""The CapabilityStatement, generated from what the server really implements."""
from __future__ import annotations

from typing import Any, Callable

from fhirserver.model.types import NOT_STORABLE, R4_RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"
_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                 "history-type", "create", "search-type"]


def capability_statement(base: str, search_params: Callable[[str], list[tuple[str, str, str]]],
                         published: str) -> dict[str, Any]:
    """Build the statement; `search_params(type)` lists (name, type, doc) the search engine honours."""
    resources = []
    for rt in sorted(R4_RESOURCE_TYPES - NOT_STORABLE):
        resources.append({
            "type": rt,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rt}",
            "interaction": [{"code": c} for c in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": [{"name": n, "type": t, "documentation": d} for n, t, d in search_params(rt)],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "fhirserver",
        "kind": "instance",
        "software": {"name": "fhirserver", "version": SOFTWARE_VERSION},
        "implementation": {"description": "fhirserver FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml",
                        "application/merge-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "history-system"}, {"code": "search-system"}],
            "searchParam": [{"name": n, "type": t, "documentation": d}
                            for n, t, d in search_params("Resource")],
        }],
    }
