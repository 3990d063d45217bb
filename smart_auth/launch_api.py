"""`/auth/launch`: an EHR mints a launch value for a patient (and encounter) its token can see.

A launch minted with a user's token is bound to that user (smart_auth.launch)."""
from __future__ import annotations

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Response, current_app, request

from smart_auth import store
from smart_auth.fhir import policy_for
from smart_auth.launch import MINTED_BY
from smart_auth.web import engine, oauth_error, oauth_json, services

MINTING_ROLES = ("staff", "admin", "system")
CONTEXT_KEYS = ("patient", "encounter", "fhirContext", "need_patient_banner", "smart_style_url")


def launch() -> Response:
    """POST {"patient": id, "encounter": id} with a staff, admin or system token."""
    try:
        token = current_app.extensions["smart_auth"]["protector"].acquire_token()
    except OAuth2Error as err:  # no, a non-Bearer or an invalid token (RFC 6750 3.1)
        resp = oauth_error("invalid_token", err.description or "a valid Bearer token is needed", 401)
        resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return resp
    principal = token.principal
    if principal.role not in MINTING_ROLES:
        return oauth_error("invalid_token", "a staff or system token is needed", 401)
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        return oauth_error("invalid_request", "a JSON object is expected")
    policy = policy_for(principal)
    for key, res_type in (("patient", "Patient"), ("encounter", "Encounter")):
        value = body.get(key)
        if value in (None, ""):
            continue
        with services().repo.transaction() as tx:
            found = tx.current(res_type, str(value), where=list(policy.row_filter(res_type))) \
                if isinstance(value, str) else None
        if found is None or found.deleted:
            return oauth_error("invalid_request", f"unknown {key}")
    ctx = {k: body[k] for k in CONTEXT_KEYS if k in body}
    if principal.user_pk is not None:
        ctx[MINTED_BY] = principal.user_pk
    return oauth_json({"launch": store.mint_launch(engine(), ctx)}, 201)


__all__ = ["launch"]
