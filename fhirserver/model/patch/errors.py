"""The failure of a PATCH body: 400 for a malformed patch document, 422 for a well-formed patch
that cannot be applied to this resource (both formats raise it, the interaction maps it)."""
from __future__ import annotations

from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied.

    ``status`` is 400 (the patch document is malformed) or 422 (the patch is well formed but
    fails against this resource, e.g. a JSON Patch ``test`` fails, or a FHIRPath selects
    nothing / more than one element where exactly one is needed).  ``code`` is a matching
    OperationOutcome issue code.
    """

    status: int
    code: str

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = "invalid" if status == 400 else "processing"


def malformed(msg: str) -> PatchError:
    return PatchError(msg, 400)


def unprocessable(msg: str) -> PatchError:
    return PatchError(msg, 422)


def is_fhirpath_patch(body: Any) -> bool:
    """True when a PATCH body is a FHIRPath Patch (a Parameters resource)."""
    return isinstance(body, dict) and body.get("resourceType") == "Parameters"
