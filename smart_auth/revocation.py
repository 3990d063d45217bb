"""RFC 7662 introspection and RFC 7009 revocation, on authlib's endpoints.

Introspection answers `active: false` for a token whose grant no longer holds (a removed
guardian link, a closed account), exactly as the FHIR API would refuse it. Revoking a refresh
token ends its whole family; revoking another client's token changes nothing and says nothing
(RFC 7009 2.2: no oracle for which tokens exist).
"""
from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, OAuth2Request
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Response

from smart_auth import store
from smart_auth.context import live_grant_context
from smart_auth.grants import USER_AUTH_METHODS
from smart_auth.models import Token
from smart_auth.server import server
from smart_auth.web import client_cors, engine, fhir_base, root_url


def _query(token_string: str, token_type_hint: str | None) -> Token | None:
    kind = {"access_token": "access", "refresh_token": "refresh"}.get(token_type_hint or "")
    row = store.find_token(engine(), token_string, kind=kind) if token_string else None
    if row is None and kind:  # the hint is only a hint (RFC 7009 2.1, RFC 7662 2.1)
        row = store.find_token(engine(), token_string)
    return Token(row) if row else None


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["access_token", *USER_AUTH_METHODS]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return _query(token_string, token_type_hint)

    def check_permission(self, token: Token, client: Any, request: OAuth2Request) -> bool:
        return True  # resource servers and the token's own client alike; knowing the token is the secret

    def introspect_token(self, token: Token) -> dict[str, Any]:
        row = token.row
        try:
            ctx, _user = live_grant_context(row["user_pk"], row["context"])
        except InvalidGrantError:
            return {"active": False}
        body: dict[str, Any] = {"active": True, "scope": row["scope"], "client_id": row["client_id"],
                                "exp": row["expires_at"], "iat": row["issued_at"],
                                "token_type": "Bearer" if row["kind"] == "access" else "refresh_token",
                                "iss": root_url(), "aud": fhir_base()}
        if row["user_pk"] is not None:
            body["sub"] = str(row["user_pk"])
        for k in ("patient", "encounter"):
            if ctx.get(k):
                body[k] = ctx[k]
        if ctx.get("fhirUser"):
            body["fhirUser"] = f"{fhir_base()}/{ctx['fhirUser']}"
        return body


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = USER_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return _query(token_string, token_type_hint)

    def authenticate_token(self, request: OAuth2Request, client: Any) -> Token | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        return token if token is not None and token.check_client(client) else None

    def revoke_token(self, token: Token, request: OAuth2Request) -> None:
        store.revoke_token(engine(), token.row)




def introspect() -> Response:
    return server().create_endpoint_response(Introspection.ENDPOINT_NAME)


def revoke() -> Response:
    return client_cors(server().create_endpoint_response(Revocation.ENDPOINT_NAME))


__all__ = ["Introspection", "Revocation", "introspect", "revoke"]
