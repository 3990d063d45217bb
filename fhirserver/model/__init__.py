"""The FHIR R4 resource model: types, JSON/XML codecs, references, validation, FHIRPath, _summary, PATCH.

No storage, no HTTP. The XML codec (lxml) loads on first use of one of its names: only the XML
content type needs it."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# `schema` and `fhirpath` are also module names here: the package gives the functions other names.
from fhirserver.model.fhirpath import fhirpath as fhirpath_adapter
from fhirserver.model.integers import INT64_MAX, parse_count
from fhirserver.model.jsonio import JsonFormatError, Raw, dumps, loads
from fhirserver.model.patch import PatchError, apply_fhirpath_patch, apply_json_patch
from fhirserver.model.references import iter_references, parse_reference, reference_id, referenced_ids
from fhirserver.model.schema import schema as schema_table
from fhirserver.model.summary import apply_summary
from fhirserver.model.types import NOT_STORABLE, R4_ONLY_SHAPES, R4_RESOURCE_TYPES
from fhirserver.model.validate import InvalidResource, is_valid_id, validate_resource

if TYPE_CHECKING:
    from fhirserver.model.xml import XmlFormatError, resource_to_xml, xml_to_resource

_LAZY = {"XmlFormatError": "fhirserver.model.xml", "resource_to_xml": "fhirserver.model.xml",
         "xml_to_resource": "fhirserver.model.xml"}


def __getattr__(name: str) -> Any:
    """The lazily loaded names (PEP 562): imported from their module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["INT64_MAX", "InvalidResource", "JsonFormatError", "NOT_STORABLE", "PatchError", "apply_fhirpath_patch",
           "apply_json_patch", "R4_ONLY_SHAPES", "R4_RESOURCE_TYPES",
           "Raw", "XmlFormatError", "apply_summary", "dumps", "fhirpath_adapter", "is_valid_id", "iter_references", "loads",
           "parse_count", "parse_reference", "reference_id", "referenced_ids", "resource_to_xml", "schema_table",
           "validate_resource", "xml_to_resource"]
