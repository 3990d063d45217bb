"""The `/auth` blueprint and the discovery routes: which URL is served by which module.

authorize / consent / login: the browser side of the code grant; token, introspect, revoke,
register: authlib's endpoints (smart_auth.server); jwks and the well-known documents:
smart_auth.discovery; launch: EHR launch minting; activate / password: smart_auth.activation.
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response

from smart_auth import activation
from smart_auth.authorize import authorize
from smart_auth.consent import consent
from smart_auth.discovery import jwks, openid_configuration_view, smart_configuration_view
from smart_auth.launch_api import launch
from smart_auth.login import login, logout
from smart_auth.fhir import fhir_protector
from smart_auth.protector import protector
from smart_auth.registration import Registration, register
from smart_auth.revocation import Introspection, Revocation, introspect, revoke
from smart_auth.server import build
from smart_auth.token import preflight, token


def blueprint() -> Blueprint:
    bp = Blueprint("smart_auth", __name__, template_folder="templates")
    bp.add_url_rule("/authorize", "authorize", authorize, methods=["GET", "POST"])
    bp.add_url_rule("/login", "login", login, methods=["POST"])
    bp.add_url_rule("/consent", "consent", consent, methods=["POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["GET", "POST"])
    # no automatic OPTIONS on the POST rule: it would answer the preflight without CORS headers
    bp.add_url_rule("/token", "token", token, methods=["POST"], provide_automatic_options=False)
    bp.add_url_rule("/token", "token_preflight", preflight, methods=["OPTIONS"])
    bp.add_url_rule("/introspect", "introspect", introspect, methods=["POST"])
    bp.add_url_rule("/revoke", "revoke", revoke, methods=["POST"])
    bp.add_url_rule("/register", "register", register, methods=["POST"])
    bp.add_url_rule("/jwks", "jwks", jwks, methods=["GET"])
    bp.add_url_rule("/launch", "launch", launch, methods=["POST"])
    activation.register(bp)

    @bp.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    return bp


def install_routes(app: Flask) -> None:
    """The authorization server and resource protector for this app, and their routes."""
    build(app, endpoints=(Introspection, Revocation, Registration))
    app.extensions["smart_auth"]["protector"] = protector()
    app.extensions["smart_auth"]["fhir_protector"] = fhir_protector(app.extensions["fhirserver"])
    app.register_blueprint(blueprint(), url_prefix="/auth")
    app.add_url_rule("/fhir/.well-known/smart-configuration", "smart_configuration", smart_configuration_view,
                     methods=["GET"])
    app.add_url_rule("/.well-known/openid-configuration", "openid_configuration", openid_configuration_view,
                     methods=["GET"])


__all__ = ["blueprint", "install_routes"]
