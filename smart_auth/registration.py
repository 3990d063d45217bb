"""RFC 7591 dynamic client registration on authlib's endpoint, behind an initial access token.

authlib validates the metadata (URIs, JWKS, the auth methods and grant types we support); we
store the client, bound to the organization of the initial access token, and hand out a secret
only to clients that authenticate with one.
"""
from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7591.errors import InvalidRedirectURIError
from flask import Response, request

from smart_auth import store
from smart_auth.discovery import AUTH_METHODS, GRANT_TYPES
from smart_auth.server import server
from smart_auth.web import engine, oauth_error


class InitialTokenRequired(OAuth2Error):
    error = "invalid_token"
    description = "an initial access token is required"
    status_code = 401

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("WWW-Authenticate", 'Bearer error="invalid_token"')]


class Registration(ClientRegistrationEndpoint):
    def authenticate_token(self, request: Any) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        initial = store.check_initial_token(engine(), auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        if initial is None:
            raise InitialTokenRequired()
        return initial

    def get_server_metadata(self) -> dict[str, Any]:
        return {"grant_types_supported": GRANT_TYPES, "token_endpoint_auth_methods_supported": AUTH_METHODS,
                "response_types_supported": ["code"]}

    def resolve_public_key(self, request: Any) -> None:
        return None  # software statements are not accepted

    def generate_client_secret(self, request: Any) -> str | None:
        method = (request.payload.data or {}).get("token_endpoint_auth_method") or "client_secret_basic"
        return super().generate_client_secret(request) if method.startswith("client_secret") else None

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info = super().generate_client_info(request)
        if info["client_secret"] is None:
            del info["client_secret"], info["client_secret_expires_at"]
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> dict[str, Any]:
        m = client_metadata
        try:
            return store.add_client(
                engine(), client_id=client_info["client_id"], client_secret=client_info.get("client_secret"),
                name=str(m.get("client_name") or "unnamed app"), redirect_uris=list(m.get("redirect_uris") or []),
                scope=str(m.get("scope") or ""), auth_method=m["token_endpoint_auth_method"],
                jwks=m.get("jwks"), jwks_uri=m.get("jwks_uri"), grant_types=m.get("grant_types"),
                organization=request.credential.get("organization"))
        except ValueError as exc:
            if "redirect" in str(exc):
                raise InvalidRedirectURIError(str(exc)) from None
            raise InvalidClientMetadataError(str(exc)) from None

    def generate_client_registration_info(self, client: dict[str, Any], request: Any) -> dict[str, Any]:
        """What we actually stored (the grant types we defaulted, the organization bound in)."""
        return {k: v for k, v in client.items() if k != "client_secret"}


def register() -> Response:
    if not isinstance(request.get_json(silent=True), dict):
        if not request.headers.get("Authorization", "").lower().startswith("bearer "):
            return server().handle_error_response(None, InitialTokenRequired())
        return oauth_error("invalid_client_metadata", "a JSON object is expected")
    return server().create_endpoint_response(Registration.ENDPOINT_NAME)


__all__ = ["Registration", "register"]
