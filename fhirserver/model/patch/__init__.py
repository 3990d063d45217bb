"""The two body formats of the FHIR R4 PATCH interaction: JSON Patch (RFC 6902) and FHIRPath
Patch (a Parameters resource). Both return a new resource dict; failures raise PatchError
(``status`` 400 for a malformed document, 422 for one that cannot be applied to this resource)."""
from fhirserver.model.patch.errors import PatchError, is_fhirpath_patch
from fhirserver.model.patch.fhirpath_patch import apply_fhirpath_patch
from fhirserver.model.patch.json_patch import apply_json_patch

__all__ = ["PatchError", "apply_fhirpath_patch", "apply_json_patch", "is_fhirpath_patch"]
