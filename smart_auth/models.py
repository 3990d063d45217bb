"""Our rows seen through authlib's model interfaces (client, authorization code, token).

The rows stay plain dicts from `smart_auth.store`; these thin wrappers answer the questions
authlib's grants and endpoints ask, with our rules: SMART scope narrowing, secret methods
interchangeable (a secret client may send it either way), PKCE always S256.
"""
from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

from fhirserver.access import NON_RESOURCE_SCOPES as NON_RESOURCE, narrow_scopes as narrow, parse_scope, split_scopes as split
from smart_auth import store

SECRET_METHODS = ("client_secret_basic", "client_secret_post")


class Client(ClientMixin):
    """A registered application (`oauth_client` row)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row["client_id"]

    @property
    def organization(self) -> str | None:
        return self.row.get("organization")

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # SMART apps always name their redirect_uri; never guess one

    def get_allowed_scope(self, scope: str | None) -> str:
        """User-facing grants: the requested scopes this client registered (v1 and v2 matched by
        `narrow`), never `system/` ones; an unregistered client scope list allows any valid scope."""
        requested = split(scope)
        allowed = split(self.row["scope"])
        scopes = narrow(requested, allowed) if allowed else [s for s in requested
                                                             if s in NON_RESOURCE or parse_scope(s)]
        return " ".join(s for s in scopes if not s.startswith("system/"))

    def system_scopes(self, scope: str | None) -> list[str]:
        """client_credentials: only the `system/` scopes asked for and registered."""
        return [s for s in narrow(split(scope), split(self.row["scope"])) if s.startswith("system/")]

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row["redirect_uris"]

    def check_client_secret(self, client_secret: str) -> bool:
        return store.verify_hash(self.row["secret_hash"], client_secret or "")

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        mine = self.row["auth_method"]
        return method == mine or (method in SECRET_METHODS and mine in SECRET_METHODS)

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.row["grant_types"]

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "refresh_token":  # refresh follows the code grant; offline_access decides
            return "authorization_code" in self.row["grant_types"] or grant_type in self.row["grant_types"]
        return grant_type in self.row["grant_types"]


class AuthorizationCode(AuthorizationCodeMixin):
    """A spent-on-first-use `auth_code` row (see `store.take_code`)."""

    code_challenge_method = "S256"

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    @property
    def code_challenge(self) -> str:
        return self.row["code_challenge"]

    def get_redirect_uri(self) -> str:
        return self.row["redirect_uri"]

    def get_scope(self) -> str:
        return self.row["scope"]

    def get_nonce(self) -> str | None:
        return self.row["nonce"]

    def get_auth_time(self) -> int | None:
        return None

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


class Token(TokenMixin):
    """An `auth_token` row (access or refresh)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def check_client(self, client: Any) -> bool:
        return self.row["client_id"] == client.get_client_id()

    def get_scope(self) -> str:
        return self.row["scope"]

    def get_expires_in(self) -> int:
        return self.row["expires_at"] - self.row["issued_at"]

    def is_expired(self) -> bool:
        return self.row["expires_at"] <= store.now()

    def is_revoked(self) -> bool:
        return bool(self.row["revoked"])

    def get_user(self) -> int | None:
        return self.row["user_pk"]

    def get_client(self) -> Any:
        return self.row["client_id"]


__all__ = ["AuthorizationCode", "Client", "SECRET_METHODS", "Token"]
