"""The authorization server: authlib's Flask `AuthorizationServer`, wired to our store.

`build(app)` makes one per app (kept in `app.extensions["smart_auth"]["server"]`; `server()`
returns the current app's). Tokens are random strings authlib generates; we keep only their
SHA-256 with the grant's SMART context, and add SMART's launch parameters to the token response.
"""
from __future__ import annotations

import logging
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import InvalidClientError, OAuth2Request, UnsupportedTokenTypeError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from flask import Flask, current_app, request as flask_request

from fhirserver.access import split_scopes as split
from smart_auth import store
from smart_auth.audit import audit_token
from smart_auth.client_auth import PrivateKeyJWT, authenticate_access_token
from smart_auth.grants import BackendGrant, CodeGrant, OpenIDCodeFlow, OpenIDOnRefresh, RefreshGrant, S256Required
from smart_auth.models import Client
from smart_auth.web import engine, services, setting

log = logging.getLogger("fhirserver.auth")
ACCESS_TOKEN_LENGTH = 42
REFRESH_TOKEN_LENGTH = 48
CONTEXT_PARAMETERS = ("patient", "encounter", "fhirContext", "smart_style_url")  # SMART launch context


class _Request(FlaskOAuth2Request):
    """authlib's request adapter without its https-only check: TLS is the deployment's business
    (usually a proxy in front of us), and `base_url` in the Settings says what clients see."""

    def __init__(self, request: Any) -> None:
        OAuth2Request.__init__(self, request.method, "https://checked-by-deployment/", headers=request.headers)
        self.uri = request.url
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class _StoredRequest(OAuth2Request):
    """An authorization request re-read from the signed pending form (login and consent pages)."""

    def __init__(self, params: dict[str, str]) -> None:
        OAuth2Request.__init__(self, "GET", "https://checked-by-deployment/", headers=flask_request.headers)
        self.uri = flask_request.url
        self.payload = BasicOAuth2Payload(params)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data

    @property
    def form(self) -> dict[str, str]:
        return {}


class SmartAuthorizationServer(AuthorizationServer):
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return _Request(flask_request)

    def handle_error_response(self, request: Any, error: Any) -> Any:
        """A failed client authentication is a 401 with a challenge, however it was attempted
        (RFC 6749 5.2 allows it always and requires it for HTTP Basic)."""
        if isinstance(error, InvalidClientError):
            error.status_code = 401
        elif isinstance(error, UnsupportedTokenTypeError):  # RFC 7009 2.2.1: an RFC 6749 5.2 error, 400
            error.status_code = 400
        return super().handle_error_response(request, error)

    def stored_request(self, params: dict[str, str]) -> OAuth2Request:
        return _StoredRequest(params)


def query_client(client_id: str) -> Client | None:
    row = store.get_client(engine(), client_id)
    return Client(row) if row else None


def generate(grant_type: str, client: Any, user: Any = None, scope: str | None = None,
             expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
    life = expires_in or int(setting("access_token_seconds", 3600))
    token: dict[str, Any] = {"access_token": generate_token(ACCESS_TOKEN_LENGTH), "token_type": "Bearer",
                             "expires_in": life, "scope": scope or ""}
    if include_refresh_token:
        token["refresh_token"] = generate_token(REFRESH_TOKEN_LENGTH)
    return token


def refresh_lifetime(scopes: list[str]) -> int | None:
    """offline_access: a long-lived refresh token; online_access: one for the working day."""
    if "offline_access" in scopes:
        return int(setting("refresh_token_seconds", 90 * 24 * 3600))
    if "online_access" in scopes:
        return int(setting("online_refresh_seconds", 8 * 3600))
    return None


def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
    """Store what the grant issued with its SMART context, and complete the response with the
    launch context (patient, encounter, ...); a refresh token only with offline/online access."""
    client, ctx = request.client, request.grant_context
    user_pk = request.user["pk"] if request.user else None
    scope = token["scope"]
    common = {"grant_id": request.grant_id, "client_id": client.get_client_id(), "user_pk": user_pk,
              "scope": scope, "context": ctx}
    store.save_token(engine(), kind="access", lifetime=token["expires_in"], value=token["access_token"], **common)
    rl = getattr(request, "refresh_lifetime", None) or refresh_lifetime(split(scope))
    if "refresh_token" in token:
        if rl:
            store.save_token(engine(), kind="refresh", lifetime=rl, value=token["refresh_token"], **common)
        else:
            del token["refresh_token"]
    for k in CONTEXT_PARAMETERS:
        if ctx.get(k):
            token[k] = ctx[k]
    if ctx.get("patient"):
        token["need_patient_banner"] = bool(ctx.get("need_patient_banner", True))
    try:
        audit_token(services().repo, client.row, ctx, scope, request.payload.grant_type, flask_request.remote_addr)
    except Exception:  # an audit failure must not hide the token error path; log loudly
        log.exception("could not write the AuditEvent for a token")


def build(app: Flask, endpoints: tuple[type, ...] = ()) -> SmartAuthorizationServer:
    """The server with our grants and client authentication methods, and `endpoints` (the
    introspection, revocation and registration endpoint classes of the blueprint)."""
    srv = SmartAuthorizationServer()
    srv.init_app(app, query_client=query_client, save_token=save_token)
    srv.register_token_generator("default", generate)
    srv.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    srv.register_client_auth_method("access_token", authenticate_access_token)
    srv.register_grant(CodeGrant, [S256Required(required=True), OpenIDCodeFlow(require_nonce=False)])
    srv.register_grant(RefreshGrant, [OpenIDOnRefresh()])
    srv.register_grant(BackendGrant)
    for endpoint in endpoints:
        srv.register_endpoint(endpoint)
    app.extensions.setdefault("smart_auth", {})["server"] = srv
    return srv


def server() -> SmartAuthorizationServer:
    return current_app.extensions["smart_auth"]["server"]


__all__ = ["SmartAuthorizationServer", "build", "server"]
