"""Client authentication methods beyond authlib's built-in secret ones.

- `private_key_jwt` (RFC 7523, SMART Backend Services): authlib checks the signature, iss = sub,
  aud and exp; we add the key source (inline JWKS or a cached JWKS URL), the accepted algorithms,
  SMART's five-minute cap on the assertion lifetime, and the jti store in the database (so every
  worker refuses a replay).
- `access_token`: a resource server may introspect with its own bearer token (RFC 7662 2.1).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import requests
from authlib.oauth2.rfc6749 import InvalidClientError, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from smart_auth import store
from smart_auth.bearer import InvalidToken, token_checks
from smart_auth.web import engine, fhir_base, services, token_url

ASSERTION_ALGS = ["RS384", "ES384", "RS256", "ES256", "RS512", "ES512"]
MAX_ASSERTION_LIFETIME = 300
JWKS_CACHE_SECONDS = 300


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self) -> None:
        super().__init__(validate_jti=True, leeway=5)

    def get_audiences(self) -> list[str]:
        return [token_url(), token_url() + "/"]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="client_assertion signature or format is not valid") from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp > store.now() + MAX_ASSERTION_LIFETIME + 5:
            raise InvalidClientError(description="client_assertion: exp may be at most five minutes ahead")
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        return isinstance(jti, str) and bool(jti) and store.remember_jti(
            engine(), claims["iss"], jti, int(claims["exp"]))

    def resolve_client_public_key(self, client: Any) -> KeySet:
        if client.row["auth_method"] != self.CLIENT_AUTH_METHOD:
            raise InvalidClientError(status_code=401, description="This client does not use private_key_jwt")
        return KeySet.import_key_set(client_jwks(client.row))


def client_jwks(row: dict[str, Any]) -> dict[str, Any]:
    """The client's inline JWKS, or its JWKS URL's document (cached per app for five minutes)."""
    if row["jwks"]:
        return row["jwks"]
    if not row["jwks_uri"]:
        raise InvalidClientError(status_code=401, description="The client has no keys")
    cache = current_app.extensions.setdefault("smart_auth", {}).setdefault("jwks_uri", {})
    hit = cache.get(row["jwks_uri"])
    if hit and time.monotonic() - hit[0] < JWKS_CACHE_SECONDS:
        return hit[1]
    try:
        jwks = requests.get(row["jwks_uri"], timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        raise InvalidClientError(status_code=401, description="The client's JWKS URL did not answer a key set") from exc
    cache[row["jwks_uri"]] = (time.monotonic(), jwks)
    return jwks


class ResourceServer:
    """The caller of an introspection that authenticated with a bearer token, not as a client."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id

    def get_client_id(self) -> str:
        return self.client_id

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "access_token" and endpoint == "introspection"


def authenticate_access_token(query_client: Callable[[str], Any], request: OAuth2Request) -> Any:
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    try:
        principal = token_checks(services()).authenticate(auth[7:].strip(), base=fhir_base())
    except InvalidToken:
        raise InvalidClientError(status_code=401, description="The bearer token is not valid") from None
    return ResourceServer(principal.client_id)


__all__ = ["ASSERTION_ALGS", "PrivateKeyJWT", "ResourceServer", "authenticate_access_token", "client_jwks"]
