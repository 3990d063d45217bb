"""The access policy contract: every entry point asks one policy object what a caller may do.

`Policy` is what the REST handlers, bundles, operations, DICOM and the portal call. `OpenPolicy`
allows everything (the `--insecure-no-auth` mode and internal jobs); the SMART policy (issue 6)
implements the same methods from a token's principal and scopes, as SQL conditions so that
searches, counts, includes and history are filtered in the database, never after the fact.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

from sqlalchemy.sql.elements import ColumnElement


class Policy(Protocol):
    def check_interaction(self, interaction: str, res_type: str | None) -> None:
        """Raise FhirError(403) when the caller may not perform `interaction` on `res_type`.

        interaction: read | vread | search | history | create | update | patch | delete | operation
        """

    def row_filter(self, res_type: str | None) -> Sequence[ColumnElement[bool]]:
        """SQL conditions on the `resource` table (or `resource_history` via its columns
        res_type/res_id) limiting what the caller can see of `res_type` (None: every type)."""

    def check_write(self, res_type: str, body: dict[str, Any]) -> None:
        """Raise FhirError(403) when the caller may not write this content (e.g. outside its
        patient's compartment)."""

    def check_operation(self, name: str, res_type: str | None) -> None:
        """Raise FhirError(403) unless the caller may run `$name` (see access.operations)."""

    def check_delete(self, tx: Any, res_type: str, res_id: str) -> None:
        """Raise FhirError(403) when the caller may not delete this resource (e.g. a profile its
        patient owns); runs in the delete's transaction `tx` and writes only there."""


class OpenPolicy:
    """No restrictions."""

    def check_interaction(self, interaction: str, res_type: str | None) -> None:
        return None

    def row_filter(self, res_type: str | None) -> Sequence[ColumnElement[bool]]:
        return ()

    def check_write(self, res_type: str, body: dict[str, Any]) -> None:
        return None

    def check_operation(self, name: str, res_type: str | None) -> None:
        return None

    def check_delete(self, tx: Any, res_type: str, res_id: str) -> None:
        return None
