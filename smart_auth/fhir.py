"""Enforcement on the FHIR API: bearer token -> Principal -> SmartPolicy for the request."""
from __future__ import annotations

from typing import Any

from flask import Response, current_app, g, make_response, request

from fhirserver.access import DenyPolicy, Principal, SmartPolicy, SystemJob
from fhirserver.access.consent import depends_on_live_data
from smart_auth import store
from smart_auth.bearer import InvalidToken, checked, trusted
from smart_auth.launch import principal_still_allowed
from smart_auth.policy import build_policy

OPEN_PATHS = ("/fhir/metadata", "/fhir/.well-known/")
INSECURE_NO_AUTH = "--insecure-no-auth"  # the one job the open policy serves for requests


def _services() -> Any:
    return current_app.extensions["fhirserver"]


def policy_for(principal: Principal) -> SmartPolicy:
    return build_policy(_services().repo, _services().settings, principal)


def _unauthorized(message: str, error: str | None) -> Exception:
    from fhirserver.errors import FhirError

    challenge = 'Bearer realm="fhirserver"'
    if error:
        challenge += f', error="{error}", error_description="{message}"'
    return FhirError(401, message, "login", headers={"WWW-Authenticate": challenge})


def before_fhir_request() -> Response | None:
    """Runs before every FHIR request: sets g.fhir_access (and g.fhir_principal) or refuses."""
    if request.method == "OPTIONS":
        return _preflight()
    services = _services()
    if services.settings.insecure_no_auth:
        g.fhir_access = SystemJob(INSECURE_NO_AUTH)
        return None
    if request.path.startswith(OPEN_PATHS) or request.path.rstrip("/") == "/fhir/metadata":
        g.fhir_access = DenyPolicy()  # discovery documents read no resources
        return None
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise _unauthorized("An access token is required (Authorization: Bearer ...)", None)
    try:
        entry = checked(services.repo.engine, auth[7:].strip(), base=services.fhir_base(),
                        still_allowed=principal_still_allowed(services.repo, services.settings))
    except InvalidToken as exc:
        raise _unauthorized(str(exc), "invalid_token") from None
    g.fhir_principal = entry.principal
    policy = entry.policy
    if policy is None:
        policy = policy_for(entry.principal)
        if not depends_on_live_data(entry.principal):
            entry.policy = policy  # a function of the token alone: built once per check
    g.fhir_access = policy
    return None


def cached_access(token: str) -> tuple[Principal, Any] | None:
    """(principal, policy) of a bearer token when both are cached and may be trusted without the
    database (see smart_auth.bearer.trusted); None sends the request through the full check."""
    entry = trusted(token)
    if entry is None or entry.policy is None:
        return None
    return entry.principal, entry.policy


def access_for_request() -> Any:
    """The policy of the current FHIR request (fails closed when authentication did not run)."""
    policy = getattr(g, "fhir_access", None)
    if policy is not None:
        return policy
    if _services().settings.insecure_no_auth:
        return SystemJob(INSECURE_NO_AUTH)
    raise _unauthorized("An access token is required", None)


def _cors_headers(resp: Response, origin: str) -> None:
    resp.headers["Access-Control-Allow-Origin"] = origin
    resp.headers["Vary"] = "Origin"
    resp.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = ("Authorization, Content-Type, Accept, Prefer, If-Match, "
                                                    "If-None-Match, If-None-Exist, If-Modified-Since")
    resp.headers["Access-Control-Expose-Headers"] = "Location, ETag, Content-Location, Last-Modified, WWW-Authenticate"
    resp.headers["Access-Control-Max-Age"] = "600"


def _preflight() -> Response:
    resp = make_response("", 204)
    origin = request.headers.get("Origin")
    if origin and (request.path.startswith(OPEN_PATHS) or store.origin_allowed(_services().repo.engine, origin)):
        _cors_headers(resp, origin)
    return resp


def after_fhir_request(resp: Response) -> Response:
    origin = request.headers.get("Origin")
    if not origin:
        return resp
    if request.path.startswith(OPEN_PATHS) or request.path.rstrip("/") == "/fhir/metadata":
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp
    principal = getattr(g, "fhir_principal", None)
    if principal is not None:
        client = store.get_client(_services().repo.engine, principal.client_id)
        if client and origin in client["origins"]:
            _cors_headers(resp, origin)
    return resp
