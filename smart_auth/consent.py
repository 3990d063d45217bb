"""The consent page and the user's decision (`/auth/consent`).

The user may untick scopes (the grant narrows to what stays ticked) and, for a standalone
`launch/patient`, picks a patient among those their own policy shows them. A launch context, a
picked patient and an encounter must all be the user's to see (smart_auth.launch), checked
again here since the page may have waited while access changed.
"""
from __future__ import annotations

import hmac
from typing import Any

from authlib.oauth2.rfc6749 import AccessDeniedError
from flask import Response, make_response, render_template, request

from fhirserver.access import describe_scopes as describe, split_scopes as split
from smart_auth.authz import check, refuse
from smart_auth.context import context_error, patient_choices, user_context
from smart_auth.launch import MINTED_BY
from smart_auth.server import server
from smart_auth.session import current_user, load_pending, login_page
from smart_auth.web import error_page

LAUNCH_KEYS = ("encounter", "fhirContext", "need_patient_banner", "smart_style_url")


def _denied(grant: Any, why: str) -> Response:
    return refuse(AccessDeniedError(why, redirect_uri=grant.redirect_uri, state=grant.request.payload.state))


def consent_page(grant: Any, pending: str, user: dict[str, Any], sess: dict[str, Any]) -> Response:
    req = grant.request
    ctx = user_context(user)
    choices: list[tuple[str, str]] = []
    if req.launch:
        launched = {**ctx, **{k: req.launch[k] for k in ("patient", "encounter", MINTED_BY) if k in req.launch}}
        why = context_error(user, launched)
        if why:
            return _denied(grant, why)
    scopes = split(req.scope)
    if "launch/patient" in scopes and not req.launch.get("patient"):
        choices = patient_choices(user, ctx)
        if not choices:
            return _denied(grant, "there is no patient this user can choose")
    resp = make_response(render_template("auth_consent.html", app_name=req.client.row["name"],
                                         items=[(s, describe(s)) for s in scopes], pending=pending,
                                         csrf=sess["csrf"], choices=choices, user=user))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


def consent() -> Response:
    params = load_pending(request.form.get("pending", ""))
    if params is None:
        return error_page("The request expired; start again from the application.")
    user, sess = current_user()
    if user is None or sess is None:
        return login_page(request.form.get("pending", ""), "Please sign in again")
    if not hmac.compare_digest(sess["csrf"], request.form.get("csrf", "")):
        return error_page("The form expired (CSRF check failed).", 403)
    grant = check(params, user)  # again: the client or the launch may have gone meanwhile
    if isinstance(grant, Response):
        return grant
    req = grant.request
    if request.form.get("decision") != "allow":
        return server().create_authorization_response(request=req, grant_user=None, grant=grant)
    ticked = set(request.form.getlist("scope"))
    scopes = [s for s in split(req.scope) if s in ticked]
    ctx = user_context(user)
    launch = req.launch or {}
    patient = launch.get("patient")
    if patient is None and "launch/patient" in scopes:
        allowed = {pid for pid, _n in patient_choices(user, ctx)}
        patient = request.form.get("patient") or (next(iter(allowed)) if len(allowed) == 1 else None)
        if patient not in allowed:
            return error_page("Choose one of the listed patients.")
    elif patient is None and user["role"] == "patient" and len(ctx["patients"]) == 1:
        patient = ctx["patients"][0]
    if patient is not None:
        ctx["patient"] = patient
        if user["role"] in ("patient", "guardian") and patient not in ctx["patients"]:
            return error_page("This launch is for a patient you cannot act for.", 403)
    for k in LAUNCH_KEYS:
        if k in launch:
            ctx[k] = launch[k]
    why = context_error(user, {**ctx, MINTED_BY: launch.get(MINTED_BY)} if MINTED_BY in launch else ctx)
    if why:
        return _denied(grant, why)
    req.grant_scope, req.grant_context = scopes, ctx
    return server().create_authorization_response(request=req, grant_user=user, grant=grant)


__all__ = ["consent", "consent_page"]
