"""Enforcement on the FHIR API: bearer token -> Principal -> SmartPolicy for the request."""
from __future__ import annotations

from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import InvalidTokenError
from flask import Response, current_app, g, make_response, request

from fhirserver.access import DenyPolicy, Principal, SmartPolicy, SystemJob, depends_on_live_data
from smart_auth import store
from smart_auth.bearer import token_checks
from smart_auth.launch import principal_still_allowed
from smart_auth.policy import build_policy
from smart_auth.protector import protector

OPEN_PATHS = ("/fhir/metadata", "/fhir/.well-known/")
INSECURE_NO_AUTH = "--insecure-no-auth"  # the one job the open policy serves for requests


def _services() -> Any:
    return current_app.extensions["fhirserver"]


def _protector() -> Any:
    return current_app.extensions["smart_auth"]["fhir_protector"]


def fhir_protector(services: Any) -> Any:
    """authlib's ResourceProtector for the FHIR API (RFC 6750 Bearer parsing), over the cached
    token check with the launch-patient re-check; built once per app."""
    still_allowed = principal_still_allowed(services.repo, services.settings)
    tokens = token_checks(services)
    return protector(lambda tok: tokens.checked(tok, base=services.fhir_base(), still_allowed=still_allowed))


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
    try:
        token = _protector().acquire_token()
    except InvalidTokenError as exc:
        raise _unauthorized(exc.description or "The access token is invalid", "invalid_token") from None
    except OAuth2Error:  # no Authorization header, another scheme, or an empty token
        raise _unauthorized("An access token is required (Authorization: Bearer ...)", None) from None
    entry = token.entry
    g.fhir_principal = entry.principal
    policy = entry.policy
    if policy is None:
        policy = policy_for(entry.principal)
        if not depends_on_live_data(entry.principal):
            entry.policy = policy  # a function of the token alone: built once per check
    g.fhir_access = policy
    return None


class _HeaderOnly:
    """What authlib's ResourceProtector reads of a request (its Authorization header), for a
    caller that has no Flask request (the lean read path)."""

    __slots__ = ("headers",)

    def __init__(self, authorization: str) -> None:
        self.headers = {"Authorization": authorization}


def lean_access(services: Any) -> Any:
    """For `fhirserver.api.lean`: Authorization header -> (principal, policy), or None to let the
    full path answer (no or bad token, or a policy that depends on live data). The same
    ResourceProtector and cached check as `before_fhir_request`: no database round trip while the
    check is cached, one query when it is not."""
    rp = fhir_protector(services)

    def access(authorization: str) -> tuple[Principal, Any] | None:
        try:
            entry = rp.validate_request(None, _HeaderOnly(authorization)).entry
        except OAuth2Error:
            return None
        if entry.policy is None:
            if depends_on_live_data(entry.principal):
                return None
            entry.policy = build_policy(services.repo, services.settings, entry.principal)
        return entry.principal, entry.policy

    return access


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
