"""Discovery: `/.well-known/smart-configuration`, `/.well-known/openid-configuration`, `/auth/jwks`."""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify, make_response

from smart_auth import store
from smart_auth.web import cors, engine, root_url

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
    "context-standalone-patient", "context-banner", "context-style", "sso-openid-connect",
    "permission-v1", "permission-v2", "permission-patient", "permission-user", "permission-offline",
    "permission-online", "authorize-post",
]
SUPPORTED_SCOPES = ["openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                    "offline_access", "online_access", "patient/*.cruds", "patient/*.rs", "patient/*.read",
                    "patient/*.write", "user/*.cruds", "user/*.rs", "user/*.read", "user/*.write",
                    "system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
ASSERTION_SIGNING_ALGS = ["RS384", "ES384", "RS256", "ES256"]


def _endpoints(root: str) -> dict[str, str]:
    return {"issuer": root, "jwks_uri": f"{root}/auth/jwks", "authorization_endpoint": f"{root}/auth/authorize",
            "token_endpoint": f"{root}/auth/token", "introspection_endpoint": f"{root}/auth/introspect",
            "revocation_endpoint": f"{root}/auth/revoke", "registration_endpoint": f"{root}/auth/register"}


def smart_configuration() -> dict[str, Any]:
    root = root_url()
    return {
        **_endpoints(root),
        "management_endpoint": f"{root}/portal/apps",
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_SIGNING_ALGS,
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration() -> dict[str, Any]:
    return {
        **_endpoints(root_url()),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash", "fhirUser", "name",
                             "nonce"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_SIGNING_ALGS,
        "grant_types_supported": GRANT_TYPES,
    }


def smart_configuration_view() -> Response:
    return cors(jsonify(smart_configuration()), any_origin=True)


def openid_configuration_view() -> Response:
    return cors(jsonify(openid_configuration()), any_origin=True)


def jwks() -> Response:
    keys = [k.as_dict(private=False) for _kid, k in store.signing_keys(engine())]
    return cors(make_response(jsonify({"keys": keys})), any_origin=True)


__all__ = ["AUTH_METHODS", "CAPABILITIES", "GRANT_TYPES", "SUPPORTED_SCOPES", "jwks", "openid_configuration",
           "openid_configuration_view", "smart_configuration", "smart_configuration_view"]
