"""JSON Patch (RFC 6902) bodies of the PATCH interaction, applied with the ``jsonpatch`` library;
the document is checked first so that a malformed one is a 400 and one that does not fit this
resource a 422."""
from __future__ import annotations

import copy

import jsonpatch
import jsonpointer

from fhirserver.model.patch.errors import malformed, unprocessable


_JSON_PATCH_OPS = {
    "add": ("path", "value"),
    "remove": ("path",),
    "replace": ("path", "value"),
    "move": ("from", "path"),
    "copy": ("from", "path"),
    "test": ("path", "value"),
}


def apply_json_patch(resource: dict, patch: list) -> dict:
    """Apply an RFC 6902 JSON Patch document to ``resource`` and return the patched copy."""
    if not isinstance(resource, dict):
        raise malformed("the resource to patch must be a JSON object")
    if not isinstance(patch, list):
        raise malformed("a JSON Patch document must be a JSON array of operations")
    for i, op in enumerate(patch):
        if not isinstance(op, dict):
            raise malformed(f"JSON Patch operation #{i} is not a JSON object")
        name = op.get("op")
        if not isinstance(name, str) or name not in _JSON_PATCH_OPS:
            raise malformed(f"JSON Patch operation #{i} has an unknown or missing 'op': {name!r}")
        for member in _JSON_PATCH_OPS[name]:
            if member not in op:
                raise malformed(f"JSON Patch operation #{i} ({name}) lacks its '{member}' member")
            if member in ("path", "from"):
                pointer = op[member]
                if not isinstance(pointer, str):
                    raise malformed(f"JSON Patch operation #{i}: '{member}' must be a string")
                try:
                    jsonpointer.JsonPointer(pointer)
                except jsonpointer.JsonPointerException as exc:
                    raise malformed(f"JSON Patch operation #{i}: bad pointer {pointer!r}: {exc}") from None
    try:
        result = jsonpatch.JsonPatch(copy.deepcopy(patch)).apply(resource, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise unprocessable(f"JSON Patch test failed: {exc}") from None
    except jsonpatch.InvalidJsonPatch as exc:
        raise malformed(f"invalid JSON Patch: {exc}") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchException) as exc:
        raise unprocessable(f"JSON Patch cannot be applied: {exc}") from None
    except jsonpointer.JsonPointerException as exc:
        # The pointers were checked to be well formed above, so this is a path that does not
        # exist in (or does not fit) this resource.
        raise unprocessable(f"JSON Patch cannot be applied: {exc}") from None
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise unprocessable(f"JSON Patch cannot be applied: {exc}") from None
    if not isinstance(result, dict):
        raise unprocessable("the result of the JSON Patch is not a JSON object")
    return result
