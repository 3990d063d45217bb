"""Bearer tokens on our own protected endpoints (`/auth/launch`), through authlib's
`ResourceProtector` (RFC 6750 parsing and error responses) with our token check behind it."""
from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6750 import BearerTokenValidator, InvalidTokenError

from fhirserver.access import Principal
from smart_auth.bearer import InvalidToken, authenticate
from smart_auth.web import engine, fhir_base


class BearerToken:
    """A checked access token: `smart_auth.bearer` already refused expired and revoked ones."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_scope(self) -> str:
        return self.principal.scope_text or ""


class _Validator(BearerTokenValidator):
    def authenticate_token(self, token_string: str) -> Any:
        try:
            return BearerToken(authenticate(engine(), token_string, base=fhir_base()))
        except InvalidToken as exc:
            raise InvalidTokenError(description=str(exc), realm=self.realm) from None


def protector() -> ResourceProtector:
    rp = ResourceProtector()
    rp.register_token_validator(_Validator(realm="fhirserver"))
    return rp


__all__ = ["BearerToken", "protector"]
