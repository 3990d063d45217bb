"""Read and vread by id when the answer is a plain 200: the stored row, nothing else.

The full handlers (`read`, `vread`) answer every case: not found, deleted, refused, not
modified. Most reads are none of these, and for them the whole interaction is "may this caller
see this row? then here are its bytes". `direct_read` does exactly that with the access gate's
conditions compiled into one statement per audience (`access.read_conditions`,
`storage.ReadStatements`) and returns None for anything else, so the caller runs the full
handler, which then decides and words the answer. Both paths ask the same policy.
"""
from __future__ import annotations

from typing import Any

from fhirserver.access import read_conditions
from fhirserver.model import R4_RESOURCE_TYPES
from fhirserver.storage import ReadStatements, Stored


def direct_read(policy: Any, reads: ReadStatements, res_type: str, res_id: str,
                version_id: int | None = None) -> Stored | None:
    """The version to answer 200 with, or None when the full handler must answer."""
    if res_type not in R4_RESOURCE_TYPES:
        return None
    gate = read_conditions(policy, "read" if version_id is None else "vread", res_type)
    if gate is None:
        return None
    where, key = gate
    if version_id is None:
        stored = reads.current(res_type, res_id, where, key)
    else:
        stored = reads.version(res_type, res_id, version_id, where, key)
    if stored is None or stored.deleted or stored.body is None:
        return None
    return stored


__all__ = ["direct_read"]
