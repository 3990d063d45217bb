"""The access policy contract: every entry point asks one policy object what a caller may do.

`Policy` is what the REST handlers, bundles, operations, DICOM and the portal call. `OpenPolicy`
allows everything (the `--insecure-no-auth` mode and internal jobs); the SMART policy
implements the same methods from a token's principal and scopes, as SQL conditions so that
searches, counts, includes and history are filtered in the database, never after the fact.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

from sqlalchemy.sql.elements import ColumnElement

from fhirserver.errors import FhirError


class Policy(Protocol):
    principal: Any  # who the policy decides for (a Principal), None for the server's own jobs

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

    def owned(self, res_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body to store: the gate may stamp who owns data that names no patient."""

    def check_new_id(self, res_type: str) -> None:
        """Raise FhirError(403) when the caller may not create `res_type` under an id it chose
        (update-as-create), whether or not that id is taken by something it cannot see."""


class OpenPolicy:
    """No restrictions."""

    principal = None

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

    def owned(self, res_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def check_new_id(self, res_type: str) -> None:
        return None


class SystemJob(OpenPolicy):
    """The server acting for itself (loading files an operator named, seeding a demo, internal
    upkeep): no restrictions, and a name saying which job it is. Never a request's policy."""

    def __init__(self, name: str) -> None:
        self.name = name


class DenyPolicy:
    """What a caller gets when nobody said who it is: nothing. Contexts default to it, so an
    entry point that forgets to pass its caller's policy fails closed, never open."""

    principal = None

    def check_interaction(self, interaction: str, res_type: str | None) -> None:
        raise FhirError(403, "No access policy was given for this call", "forbidden")

    def row_filter(self, res_type: str | None) -> Sequence[ColumnElement[bool]]:
        from sqlalchemy import false

        return (false(),)

    def check_write(self, res_type: str, body: dict[str, Any]) -> None:
        self.check_interaction("create", res_type)

    def owned(self, res_type: str, body: dict[str, Any]) -> dict[str, Any]:
        self.check_interaction("create", res_type)
        return body

    def check_new_id(self, res_type: str) -> None:
        self.check_interaction("create", res_type)

    def check_operation(self, name: str, res_type: str | None) -> None:
        self.check_interaction("operation", res_type)

    def check_delete(self, tx: Any, res_type: str, res_id: str) -> None:
        self.check_interaction("delete", res_type)
