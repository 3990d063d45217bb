"""HL7 R4 definitions the server is built from (search parameters, compartments, the
OperationDefinitions). The CapabilityStatement builder (`conformance.capability`) loads on first use
of its names, so that reading a definition imports nothing of the server."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conformance.definitions import definitions_dir, load_definition

if TYPE_CHECKING:
    from conformance.capability import capability_statement, with_smart_security

_LAZY = {"capability_statement": "conformance.capability", "with_smart_security": "conformance.capability"}


def __getattr__(name: str) -> Any:
    """The CapabilityStatement builder's names, imported on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["capability_statement", "definitions_dir", "load_definition", "with_smart_security"]
