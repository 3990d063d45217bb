"""The grants, on authlib: authorization code (+ RFC 7636 PKCE, S256 only, every client) with the
OpenID Connect code flow, refresh tokens (rotated, reuse ends the family), client_credentials
(SMART Backend Services, organization-bound).

authlib runs the protocol (parameters, client authentication, redirect and PKCE checks, error
responses); these classes add what SMART and our access model need: `aud`, launch contexts,
scope narrowing, grant contexts re-checked against the user's live access, one-time codes.
"""
from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import (
    InvalidGrantError, InvalidRequestError, InvalidScopeError, OAuth2Request, grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, OpenIDToken

from fhirserver.access import split_scopes as split
from smart_auth import store
from smart_auth.context import live_grant_context
from smart_auth.models import AuthorizationCode, Token
from smart_auth.web import engine, fhir_base, root_url

USER_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
BACKEND_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ID_TOKEN_SECONDS = 3600


class S256Required(CodeChallenge):
    """RFC 7636 with `S256` only, required from every client, confidential ones included."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required")
        super().validate_code_challenge(grant, redirect_uri)


class _IdTokenClaims:
    """The id_token: RS256 with our newest key (kid in the header), SMART's fhirUser claim."""

    def resolve_client_private_key(self, client: Any) -> Any:
        return store.signing_keys(engine())[0][1]

    def get_client_algorithm(self, client: Any) -> str:
        return "RS256"

    def get_encode_header(self, client: Any) -> dict[str, str]:
        return {"alg": "RS256", "kid": store.signing_keys(engine())[0][0], "typ": "JWT"}

    def get_client_claims(self, client: Any) -> dict[str, Any]:
        return {"iss": root_url(), "aud": client.get_client_id(), "exp": store.now() + ID_TOKEN_SECONDS}

    def generate_user_info(self, user: dict[str, Any], scope: str) -> dict[str, Any]:
        scopes = split(scope)
        info: dict[str, Any] = {"sub": str(user["pk"])}
        if user.get("fhir_user") and "fhirUser" in scopes:
            info["fhirUser"] = f"{fhir_base()}/{user['fhir_user']}"
        if user.get("display_name") and ("profile" in scopes or "fhirUser" in scopes):
            info["name"] = user["display_name"]
        return info

    def process_token(self, grant: Any, response: Any) -> Any:
        if grant.request.user is None:  # no end user, no identity to assert
            return response[1]
        return super().process_token(grant, response)  # type: ignore[misc]


class OpenIDCodeFlow(_IdTokenClaims, OpenIDCode):
    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return store.nonce_used(engine(), request.payload.client_id, nonce)


class OpenIDOnRefresh(_IdTokenClaims, OpenIDToken):
    """A refreshed token keeps its id_token (SMART: `openid fhirUser` apps re-read the user)."""


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = USER_AUTH_METHODS

    def validate_authorization_request(self) -> str:
        """authlib's checks, then SMART's: `aud` is this FHIR server, a launch value is known.

        Leaves `request.scope` (narrowed to the client's registration) and `request.launch`."""
        redirect_uri = super().validate_authorization_request()
        req = self.request
        try:
            if (req.payload.data.get("aud") or "").rstrip("/") != fhir_base():
                raise InvalidRequestError(f"aud must be {fhir_base()}")
            scopes = split(req.scope)
            req.launch = {}
            if req.payload.data.get("launch"):
                got = store.get_launch(engine(), req.payload.data["launch"])
                if got is None:
                    raise InvalidRequestError("unknown or expired launch")
                req.launch = got
                if "launch" not in scopes:
                    scopes.append("launch")
            if not scopes:
                raise InvalidScopeError("no requested scope can be granted")
        except (InvalidRequestError, InvalidScopeError) as exc:
            exc.redirect_uri = redirect_uri
            raise
        req.scope = " ".join(scopes)
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        """`request.grant_scope` and `request.grant_context` are what the user consented to."""
        store.save_code(engine(), code=code, client_id=request.client.get_client_id(),
                        user_pk=request.user["pk"], redirect_uri=request.payload.redirect_uri,
                        scope=" ".join(request.grant_scope), context=request.grant_context,
                        code_challenge=request.payload.data["code_challenge"],
                        nonce=request.payload.data.get("nonce"))

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        """Spent at the first presentation (a replay also revokes what the first one got)."""
        row, first = store.take_code(engine(), code or "")
        if row is None or not first or row["expires_at"] < store.now() \
                or row["client_id"] != client.get_client_id():
            return None
        return AuthorizationCode(row)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: `query_authorization_code` already spent it, keeping the row so that a
        replay is recognised."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> dict[str, Any]:
        row = authorization_code.row
        self.request.grant_context, user = live_grant_context(row["user_pk"], row["context"])
        self.request.grant_id = row["grant_id"]
        return user  # type: ignore[return-value]


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = USER_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        row = store.find_token(engine(), refresh_token, kind="refresh")
        if row is None:
            return None
        if row["revoked"]:
            store.revoke_token(engine(), row)  # reuse of a rotated token: end the whole family
            return None
        return None if row["expires_at"] <= store.now() else Token(row)

    def authenticate_user(self, refresh_token: Token) -> dict[str, Any] | None:
        """The grant must still hold; then the old refresh token is spent *before* the new one is
        issued, so that of two concurrent refreshes only one succeeds."""
        row = refresh_token.row
        try:
            self.request.grant_context, user = live_grant_context(row["user_pk"], row["context"])
        except InvalidGrantError:
            store.revoke_token(engine(), row)  # the grant ended: its whole token family goes
            raise
        if not store.rotate_refresh(engine(), row):
            raise InvalidGrantError("The refresh token was already used")
        self.request.grant_id = row["grant_id"]
        self.request.refresh_lifetime = max(row["expires_at"] - store.now(), 60)
        return user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Nothing to do: `authenticate_user` rotated it already."""


class BackendGrant(grants.ClientCredentialsGrant):
    """SMART Backend Services: `system/` scopes only, the client's organization bound in."""

    TOKEN_ENDPOINT_AUTH_METHODS = BACKEND_AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        scopes = self.request.client.system_scopes(self.request.payload.scope)
        if not scopes:
            raise InvalidScopeError("No requested system/ scope can be granted")
        self.request.scope = " ".join(scopes)
        org = self.request.client.organization
        self.request.grant_context = {"role": "system", "organizations": [org] if org else [], "patients": []}
        self.request.grant_id = store.new_token(16)

    def generate_token(self, **kwargs: Any) -> dict[str, Any]:
        return super().generate_token(**{**kwargs, "scope": self.request.scope})


__all__ = ["BackendGrant", "CodeGrant", "OpenIDCodeFlow", "OpenIDOnRefresh", "RefreshGrant", "S256Required"]
