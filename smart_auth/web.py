"""What every `/auth` view shares: the app's services, OAuth JSON and CORS responses, error pages."""
from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, make_response, render_template, request

from smart_auth import ratelimit, store


def services() -> Any:
    return current_app.extensions["fhirserver"]


def engine() -> Any:
    return services().repo.engine


def setting(name: str, default: Any) -> Any:
    return getattr(services().settings, name, default)


def fhir_base() -> str:
    return services().fhir_base()


def root_url() -> str:
    return services().root_url()


def token_url() -> str:
    return f"{root_url()}/auth/token"


def no_store(resp: Response) -> Response:
    """RFC 6749 5.1: token responses (and our errors) must not be cached."""
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def oauth_json(body: dict[str, Any], status: int = 200) -> Response:
    return no_store(make_response(jsonify(body), status))


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    """An RFC 6749 5.2 error body for the cases authlib does not produce (rate limit, launch minting)."""
    return oauth_json({"error": error, "error_description": description}, status)


def cors(resp: Response, origins: frozenset[str] | None = None, any_origin: bool = False) -> Response:
    """Browser apps call the token endpoint cross-origin: allow the registered clients' origins."""
    origin = request.headers.get("Origin")
    if not origin:
        return resp
    if any_origin:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    elif origins is not None and (origin in origins or store.origin_allowed(engine(), origin)):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Vary"] = "Origin"
    else:
        return resp
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match"
    resp.headers["Access-Control-Expose-Headers"] = "Location, ETag, Content-Location, Last-Modified, WWW-Authenticate"
    return resp


def client_cors(resp: Response) -> Response:
    return cors(resp, store.all_origins(engine()))


def error_page(message: str, status: int = 400) -> Response:
    """For errors that must not redirect (unknown client, unregistered redirect URI): a page."""
    return make_response(render_template("auth_error.html", message=message), status)


def rate_limited(endpoint: str) -> Response | None:
    """429 with Retry-After once this address failed too often (see smart_auth.ratelimit)."""
    wait = ratelimit.blocked_for(engine(), request.remote_addr)
    if not wait:
        return None
    if endpoint == "token":
        resp = oauth_error("slow_down", "Too many failed attempts from this address; try again later", 429)
    else:
        resp = error_page("Too many failed sign-in attempts from this address; try again later.", 429)
    resp.headers["Retry-After"] = str(wait)
    return resp


__all__ = ["client_cors", "cors", "engine", "error_page", "fhir_base", "no_store", "oauth_error", "oauth_json",
           "rate_limited", "root_url", "services", "setting", "token_url"]
