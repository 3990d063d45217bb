"""`/auth/token`: authlib's token endpoint behind our per-address rate limit and CORS.

A failed client authentication or grant counts against the caller's address; past the limit
the endpoint answers 429 `slow_down` until the window has passed (smart_auth.ratelimit).
"""
from __future__ import annotations

import json

from flask import Response, make_response, request

from smart_auth import ratelimit
from smart_auth.server import server
from smart_auth.web import client_cors, engine, rate_limited

COUNTED_ERRORS = ("invalid_client", "invalid_grant")


def token() -> Response:
    limited = rate_limited("token")
    if limited is not None:
        return client_cors(limited)
    resp = server().create_token_response()
    if resp.status_code >= 400 and _error_of(resp) in COUNTED_ERRORS:
        ratelimit.record_failure(engine(), request.remote_addr, "token")
    return client_cors(resp)


def preflight() -> Response:
    return client_cors(make_response("", 204))


def _error_of(resp: Response) -> str | None:
    try:
        return json.loads(resp.get_data(as_text=True)).get("error")
    except (ValueError, AttributeError):
        return None


__all__ = ["preflight", "token"]
