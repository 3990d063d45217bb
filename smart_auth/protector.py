"""Bearer tokens on our protected endpoints (the FHIR API, `/auth/launch`), through authlib's
`ResourceProtector` (RFC 6750 parsing and error responses) with our cached token check behind it."""
from __future__ import annotations

from typing import Any, Callable

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6750 import BearerTokenValidator, InvalidTokenError

from fhirserver.access import Principal
from smart_auth.bearer import InvalidToken, token_checks
from smart_auth.web import fhir_base, services

Check = Callable[[str], Any]  # token -> smart_auth.bearer's cache entry, or InvalidToken


class BearerToken:
    """A checked access token: `smart_auth.bearer` already refused expired and revoked ones.
    `entry` is the bearer cache's entry (the Principal and the slot for its policy)."""

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.principal: Principal = entry.principal

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_scope(self) -> str:
        return self.principal.scope_text or ""


class _Validator(BearerTokenValidator):
    def __init__(self, check: Check, realm: str) -> None:
        super().__init__(realm=realm)
        self.check = check

    def authenticate_token(self, token_string: str) -> Any:
        try:
            return BearerToken(self.check(token_string.strip()))
        except InvalidToken as exc:
            raise InvalidTokenError(description=str(exc), realm=self.realm) from None


def _default_check(token: str) -> Any:
    return token_checks(services()).checked(token, base=fhir_base())


def protector(check: Check | None = None) -> ResourceProtector:
    """A ResourceProtector whose Bearer tokens are checked by `check` (default: the token check
    of this app's database, without the launch-patient re-check the FHIR API adds)."""
    rp = ResourceProtector()
    rp.register_token_validator(_Validator(check or _default_check, realm="fhirserver"))
    return rp


__all__ = ["BearerToken", "protector"]
