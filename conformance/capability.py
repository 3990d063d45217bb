"""The CapabilityStatement, generated from what the server really implements.

Built from the data it is given (search parameters, the operation registry's definitions), so
conformance depends on no part of the server that serves it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from conformance.definitions import load_definition
from fhirserver.model import NOT_STORABLE, R4_RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"
BULK_DATA_CAPABILITY = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
BULK_SYSTEM_EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
BULK_TYPE_OPERATIONS = {"Patient": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                        "Group": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                 "history-type", "create", "search-type"]


OperationDefinitions = Mapping[str, tuple[str, tuple[str, ...]]]


def capability_statement(base: str, search_params: Callable[[str], list[tuple[str, str, str]]],
                         published: str, operations: OperationDefinitions | None = None) -> dict[str, Any]:
    """Build the statement; `search_params(type)` lists (name, type, doc) the search engine honours,
    `operations` maps an operation's name to (OperationDefinition id, resource types)."""
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
    _declare_operations(resources, operations or {})  # each with its shipped OperationDefinition
    for r in resources:  # Bulk Data $export at Patient and Group level
        if r["type"] in BULK_TYPE_OPERATIONS:
            r.setdefault("operation", []).append({"name": "export", "definition": BULK_TYPE_OPERATIONS[r["type"]]})
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "fhirserver",
        "kind": "instance",
        "instantiates": [BULK_DATA_CAPABILITY],
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
            "operation": [{"name": "export", "definition": BULK_SYSTEM_EXPORT}],
        }],
    }


def _declare_operations(resources: list[dict[str, Any]], operations: OperationDefinitions) -> None:
    by_type = {r["type"]: r for r in resources}
    for name, (def_id, types) in operations.items():
        for rt in types:
            if rt in by_type:
                by_type[rt].setdefault("operation", []).append({"name": name, "definition": _definition_url(def_id)})


def _definition_url(def_id: str) -> str:
    """The canonical URL of an OperationDefinition shipped in conformance/definitions."""
    try:
        return load_definition(f"OperationDefinition-{def_id}.json")["url"]
    except (OSError, KeyError, ValueError):
        return f"http://fhirserver.local/fhir/OperationDefinition/{def_id}"


def with_smart_security(statement: dict[str, Any], base: str) -> dict[str, Any]:
    """The statement with the SMART security section: service coding and the
    `oauth-uris` extension (deprecated in SMART 2, but clients such as fhirclient read only it)."""
    root = base.rstrip("/")
    root = root[: -len("/fhir")] if root.endswith("/fhir") else root
    security = {
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                     "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": name, "valueUri": f"{root}/auth/{path}"} for name, path in (
                ("authorize", "authorize"), ("token", "token"), ("register", "register"),
                ("introspect", "introspect"), ("revoke", "revoke"))],
        }],
        "description": "SMART App Launch 2.x and Backend Services; discovery at "
                       f"{root}/fhir/.well-known/smart-configuration",
    }
    rest = [dict(r, security=security) if r.get("mode") == "server" else r for r in statement.get("rest", [])]
    return {**statement, "rest": rest}
