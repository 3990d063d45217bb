"""An authorization request checked by authlib's code grant, and how a refusal is shown: on our
error page when the client or its redirect URI cannot be trusted (RFC 6749 4.1.2.1), else as an
error redirect to the client."""
from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError, OAuth2Error, OAuth2Request
from flask import Response

from smart_auth.server import server
from smart_auth.web import error_page


def check(params: dict[str, str] | None, user: dict[str, Any] | None) -> Any:
    """The validated grant for these parameters (None: the current request's), or the refusal."""
    srv = server()
    req: OAuth2Request | None = srv.stored_request(params) if params is not None else None
    try:
        return srv.get_consent_grant(request=req, end_user=user)
    except OAuth2Error as err:
        return refuse(err)
    except ValueError:  # authlib refuses to build an error whose description quotes non-ASCII input
        return error_page("The authorization request is not valid.")


def refuse(err: OAuth2Error) -> Response:
    if err.redirect_uri:
        return server().handle_error_response(None, err)
    if isinstance(err, InvalidClientError):
        return error_page("Unknown application (client_id).")
    if "redirect" in (err.description or "").lower():
        return error_page("The redirect_uri is not registered for this application.")
    return error_page(err.description or "The authorization request is not valid.")


__all__ = ["check", "refuse"]
