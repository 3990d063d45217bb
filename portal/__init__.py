"""The patient and guardian web portal under /portal: server-rendered pages that call
the same FHIR interactions and access rules as the REST API. `blueprint()` builds it."""
from __future__ import annotations

from typing import Any


def blueprint() -> Any:
    from portal.views import blueprint as _bp

    return _bp()


__all__ = ["blueprint"]
