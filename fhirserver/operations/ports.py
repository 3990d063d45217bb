"""What patient-wide operations need from the packages that own other tables.

Erasing, closing, merging or inviting a patient reaches rows the FHIR core does not own: logins
and tokens (smart_auth), the DICOM index and files (dicom), report share links (portal). The
operations call these small interfaces instead of writing those tables, and the app factory hands
in the owners' implementations (`Ports`), so each package keeps its tables to itself and the core
imports none of them. Every method runs on the operation's own connection (`conn`) or storage
transaction (`tx`, where work must follow the commit), inside its transaction: a refused or
failed operation changes nothing anywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Protocol

from fhirserver.errors import FhirError


class Logins(Protocol):
    """Login accounts, their tokens and their grants (owned by smart_auth)."""

    def find(self, conn: Any, *, user_pk: int | None = None, username: str | None = None) -> dict[str, Any] | None:
        """The login row (pk, username, role, fhir_user, patients list, active), or None."""

    def verify_password(self, conn: Any, user_pk: int | None, password: str | None) -> bool: ...

    def create(self, conn: Any, *, username: str, password: str, role: str, fhir_user: str,
               patients: list[str], active: bool) -> int:
        """A new login; its primary key."""

    def change(self, tx: Any, user_pk: int, *, patients: list[str] | None = None,
               password: str | None = None, active: bool | None = None) -> None:
        """Set what is given; deactivating also ends the login's tokens."""

    def of_profile(self, conn: Any, fhir_user: str, role: str | None = None) -> list[int]:
        """The logins acting as this profile (`Patient/1`)."""

    def erase(self, tx: Any, *, user_pks: Iterable[int], usernames: Iterable[str], patient_id: str) -> list[int]:
        """Remove these logins (and those acting as the patient or named by the usernames) with
        their tokens, codes and sessions; guardians keep their own login without the patient.
        Returns the removed logins' keys."""

    def revoke_tokens(self, tx: Any, user_pk: int) -> None:
        """End every token of the login, on every worker."""

    def grants(self, conn: Any, patient_id: str) -> list[dict[str, Any]]:
        """The live authorizations acting for the patient: grant, client, name, scope, since,
        until, offline."""

    def revoke_grants(self, tx: Any, grant_ids: list[str]) -> None: ...


class Imaging(Protocol):
    """The DICOM index and stored instances (owned by the DICOM node)."""

    def erase_patient(self, conn: Any, patient_id: str, imaging_study_ids: list[str]) -> list[str]:
        """Drop the patient's studies from the index; the storage keys no one else uses."""

    def delete_files(self, keys: list[str]) -> None:
        """Remove stored instances (after the erasing transaction committed)."""

    def move_studies(self, conn: Any, source: str, target: str, imaging_study_ids: list[str]) -> None:
        """Index rows of the source patient's studies (unlinked ones, or those among the moved
        ImagingStudy resources) now belong to the target."""


class Shares(Protocol):
    """Signed report share links (owned by the portal)."""

    def link_token(self, engine: Any, report_id: str, patient_id: str | None, user_pk: int) -> str: ...


@dataclasses.dataclass(frozen=True)
class Ports:
    logins: Logins | None = None
    imaging: Imaging | None = None
    shares: Shares | None = None


def port(services: Any, name: str) -> Any:
    """The named port, or a 501 saying this server was built without it (never a silent skip:
    an erase that cannot reach the logins must not pretend it removed them)."""
    found = getattr(getattr(services, "ports", None) or Ports(), name)
    if found is None:
        raise FhirError(501, f"This server was started without the {name} component this operation needs",
                        "not-supported")
    return found


__all__ = ["Imaging", "Logins", "Ports", "Shares", "port"]
