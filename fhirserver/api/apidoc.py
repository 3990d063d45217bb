"""The OpenAPI part of the server's own (non-FHIR) endpoints: OAuth under /auth, discovery,
DICOMweb, probes and metrics, and the FHIR operations the CapabilityStatement does not list.

Paths come from the app's URL map through flask-smorest's apispec Flask plugin (`spec.path(rule=)`),
response bodies from marshmallow schemas through apispec's marshmallow plugin. Only rules that
exist in this app are documented, each with the methods the rule really takes, so the document
cannot promise a route that is not there; a rule of ours without a description here still appears
(from its view's docstring), so a new route is never missing from /docs.
"""
from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from flask_smorest.spec.plugins import FlaskPlugin
from marshmallow import INCLUDE, Schema, fields

# Rules that exist only to answer 405/404 as an OperationOutcome, and pages that are not an API.
_SKIP_ENDPOINTS = {"static", "_root", "openapi._docs", "openapi._init", "openapi._static", "openapi._openapi",
                   "smart_auth.token_preflight"}
_SKIP_PREFIXES = ("fhir.", "portal.", "console.", "dicomweb.unknown")
_METHODS = ("get", "post", "put", "patch", "delete")
_BEARER = {"smart_auth.launch"}  # own endpoints that take the bearer token (and DICOMweb)


class _Open(Schema):
    class Meta:
        unknown = INCLUDE  # documents the fields a client relies on; more may come


class Health(_Open):
    status = fields.String(required=True, metadata={"example": "ok"})


class Ready(_Open):
    status = fields.String(required=True, metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "database, data_dir, jobs: ok | absent | skipped"})


class Issue(_Open):
    severity = fields.String(required=True)
    code = fields.String(required=True)
    diagnostics = fields.String()
    expression = fields.List(fields.String())


class OperationOutcome(_Open):
    resourceType = fields.String(required=True, metadata={"enum": ["OperationOutcome"]})
    issue = fields.List(fields.Nested(Issue), required=True)


class OAuthError(_Open):
    error = fields.String(required=True, metadata={"description": "RFC 6749 section 5.2 error code"})
    error_description = fields.String()


class TokenResponse(_Open):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer()
    scope = fields.String()
    refresh_token = fields.String()
    id_token = fields.String()
    patient = fields.String(metadata={"description": "SMART launch context"})


class Introspection(_Open):
    active = fields.Boolean(required=True)
    scope = fields.String()
    client_id = fields.String()
    sub = fields.String()
    exp = fields.Integer()


class Jwks(_Open):
    keys = fields.List(fields.Dict(), required=True)


class Discovery(_Open):
    issuer = fields.String()
    authorization_endpoint = fields.String()
    token_endpoint = fields.String()
    jwks_uri = fields.String()


class ClientRegistration(_Open):
    client_id = fields.String(required=True)
    client_secret = fields.String()
    redirect_uris = fields.List(fields.String())


class Launch(_Open):
    launch = fields.String(required=True)


def _json(schema: Any, description: str, mime: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {mime: {"schema": schema}}}


def _media(description: str, *mimes: str) -> dict[str, Any]:
    return {"description": description, "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                                    for m in mimes}}


_HTML = {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
_FORM = {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object",
                                                                          "additionalProperties": True}}}}
_OO = _json(OperationOutcome, "OperationOutcome", "application/fhir+json")
_OAUTH_ERR = _json(OAuthError, "OAuth error")
_DICOM_JSON = {"type": "array", "items": {"type": "object"}}
_QIDO = {"200": {"description": "matches (DICOM JSON)",
                 "content": {"application/dicom+json": {"schema": _DICOM_JSON},
                             "application/json": {"schema": _DICOM_JSON}}},
         "204": {"description": "no match"}, "400": {"description": "bad query"},
         "401": {"description": "no or bad token"}, "403": {"description": "not allowed"}}
_WADO = {"200": _media("DICOM objects (multipart/related) or the asked media type",
                       "multipart/related", "application/dicom"),
         "400": {"description": "bad request"}, "401": {"description": "no or bad token"},
         "404": {"description": "not found or not visible"}, "406": {"description": "media type not available"}}
_RENDERED = {"200": _media("rendered image", "image/jpeg", "image/png"), "400": {"description": "bad request"},
             "401": {"description": "no or bad token"}, "404": {"description": "not found or not visible"},
             "406": {"description": "media type not available"}}
_METADATA = {"200": {"description": "DICOM JSON metadata",
                     "content": {"application/dicom+json": {"schema": _DICOM_JSON}}},
             "401": {"description": "no or bad token"}, "404": {"description": "not found or not visible"}}
_STOW = {"200": {"description": "all stored", "content": {"application/dicom+json": {"schema": {"type": "object"}}}},
         "202": {"description": "some stored, some refused",
                 "content": {"application/dicom+json": {"schema": {"type": "object"}}}},
         "400": {"description": "bad request"}, "401": {"description": "no or bad token"},
         "403": {"description": "not allowed"}, "409": {"description": "none stored"},
         "415": {"description": "not multipart/related; type=application/dicom"}}


def _op(summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


def _q(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$"}
_QIDO_PARAMS = [_q("limit", "at most this many matches", type="integer", minimum=0),
                _q("offset", "skip this many matches", type="integer", minimum=0),
                _q("includefield", "attributes to add to each match"),
                _q("fuzzymatching", "fuzzy person name matching", type="boolean")]

# endpoint -> method -> operation (paths and path parameters come from the URL rule)
OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "health._healthz": {"get": _op("Liveness: the process answers", "operations",
                                   {"200": _json(Health, "alive")})},
    "health._readyz": {"get": _op("Readiness: database, data folder and job tables answer", "operations",
                                  {"200": _json(Ready, "ready"),
                                   "503": _json(OperationOutcome, "not ready: one issue per failed check",
                                                "application/fhir+json")})},
    "metrics._metrics": {"get": _op("Prometheus metrics (text exposition format)", "operations",
                                    {"200": {"description": "metrics",
                                             "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "openid_configuration": {"get": _op("OpenID Connect discovery", "oauth",
                                        {"200": _json(Discovery, "configuration")})},
    "smart_configuration": {"get": _op("SMART App Launch configuration", "oauth",
                                       {"200": _json(Discovery, "configuration")})},
    "smart_auth.token": {"post": _op(
        "OAuth 2.0 token endpoint: authorization_code, refresh_token, client_credentials", "oauth",
        {"200": _json(TokenResponse, "token"), "400": _OAUTH_ERR, "401": _OAUTH_ERR, "429": _OAUTH_ERR},
        requestBody={**_FORM, "required": True})},
    "smart_auth.introspect": {"post": _op("Token introspection (RFC 7662)", "oauth",
                                          {"200": _json(Introspection, "token state"), "400": _OAUTH_ERR,
                                           "401": _OAUTH_ERR, "429": _OAUTH_ERR},
                                          requestBody={**_FORM, "required": True})},
    "smart_auth.revoke": {"post": _op("Token revocation (RFC 7009)", "oauth",
                                      {"200": {"description": "revoked (or unknown)"}, "400": _OAUTH_ERR,
                                       "401": _OAUTH_ERR, "429": _OAUTH_ERR},
                                      requestBody={**_FORM, "required": True})},
    "smart_auth.register": {"post": _op(
        "Dynamic client registration (RFC 7591), with an initial access token", "oauth",
        {"201": _json(ClientRegistration, "registered"), "400": _OAUTH_ERR, "401": _OAUTH_ERR,
         "429": _OAUTH_ERR},
        requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}})},
    "smart_auth.jwks": {"get": _op("The server's signing keys (JWKS)", "oauth", {"200": _json(Jwks, "keys")})},
    "smart_auth.launch": {"post": _op("Mint an EHR launch context (staff or system token)", "oauth",
                                      {"200": _json(Launch, "launch id"), "400": _OAUTH_ERR, "401": _OAUTH_ERR,
                                       "403": _OAUTH_ERR},
                                      requestBody={"content": {"application/json": {"schema": {"type": "object"}}}})},
    "smart_auth.authorize": {
        "get": _op("Authorization endpoint (code + PKCE): the login or consent page", "oauth",
                   {"200": _HTML, "302": {"description": "back to the client's redirect URI"},
                    "400": _HTML},
                   parameters=[_q("response_type", "code"), _q("client_id", "the client"),
                               _q("redirect_uri", "registered redirect URI"), _q("scope", "scopes"),
                               _q("state", "opaque value"), _q("aud", "the FHIR base URL"),
                               _q("code_challenge", "PKCE S256 challenge"),
                               _q("code_challenge_method", "S256"), _q("launch", "EHR launch id")]),
        "post": _op("Authorization endpoint (form post)", "oauth",
                    {"200": _HTML, "302": {"description": "back to the client"}, "400": _HTML},
                    requestBody=_FORM)},
    "smart_auth.login": {"post": _op("Login form of the authorization flow", "oauth",
                                     {"200": _HTML, "302": {"description": "on to consent"}, "400": _HTML,
                                      "401": _HTML, "403": _HTML, "429": _HTML}, requestBody=_FORM)},
    "smart_auth.consent": {"post": _op("Consent form of the authorization flow", "oauth",
                                       {"302": {"description": "back to the client"}, "400": _HTML,
                                        "403": _HTML}, requestBody=_FORM)},
    "smart_auth.logout": {m: _op("End the login session", "oauth", {"200": _HTML, "302": {"description": "done"}})
                          for m in ("get", "post")},
    "smart_auth.password": {
        "get": _op("Password reset page", "oauth", {"200": _HTML, "400": _HTML}),
        "post": _op("Password reset form", "oauth", {"200": _HTML, "302": {"description": "done"}, "400": _HTML,
                                                    "403": _HTML, "429": _HTML}, requestBody=_FORM)},
    "smart_auth.activate": {
        "get": _op("Account activation page (invitation link)", "oauth", {"200": _HTML, "400": _HTML}),
        "post": _op("Account activation form", "oauth", {"200": _HTML, "302": {"description": "done"},
                                                        "400": _HTML, "403": _HTML, "429": _HTML},
                    requestBody=_FORM)},
    "dicomweb.base": {"get": _op("DICOMweb service root", "dicomweb", {"200": {"description": "service"}})},
    "dicomweb.base_slash": {"get": _op("DICOMweb service root", "dicomweb", {"200": {"description": "service"}})},
    "dicomweb.qido_studies": {"get": _op("QIDO-RS: search studies", "dicomweb", _QIDO, parameters=_QIDO_PARAMS)},
    "dicomweb.qido_series": {"get": _op("QIDO-RS: search series", "dicomweb", _QIDO, parameters=_QIDO_PARAMS)},
    "dicomweb.qido_instances": {"get": _op("QIDO-RS: search instances", "dicomweb", _QIDO,
                                           parameters=_QIDO_PARAMS)},
    "dicomweb.qido_study_series": {"get": _op("QIDO-RS: series of a study", "dicomweb", _QIDO,
                                              parameters=_QIDO_PARAMS)},
    "dicomweb.qido_study_instances": {"get": _op("QIDO-RS: instances of a study", "dicomweb", _QIDO,
                                                 parameters=_QIDO_PARAMS)},
    "dicomweb.qido_series_instances": {"get": _op("QIDO-RS: instances of a series", "dicomweb", _QIDO,
                                                  parameters=_QIDO_PARAMS)},
    "dicomweb.stow": {"post": _op("STOW-RS: store instances", "dicomweb", _STOW, requestBody={
        "required": True, "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}})},
    "dicomweb.stow_study": {"post": _op("STOW-RS: store instances into a study", "dicomweb", _STOW, requestBody={
        "required": True, "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}})},
    "dicomweb.study": {"get": _op("WADO-RS: a study", "dicomweb", _WADO)},
    "dicomweb.series": {"get": _op("WADO-RS: a series", "dicomweb", _WADO)},
    "dicomweb.instance": {"get": _op("WADO-RS: an instance", "dicomweb", _WADO)},
    "dicomweb.frames": {"get": _op("WADO-RS: frames of an instance", "dicomweb", _WADO)},
    "dicomweb.bulkdata": {"get": _op("WADO-RS: bulk data of an attribute", "dicomweb", _WADO)},
    "dicomweb.study_metadata": {"get": _op("WADO-RS: study metadata", "dicomweb", _METADATA)},
    "dicomweb.series_metadata": {"get": _op("WADO-RS: series metadata", "dicomweb", _METADATA)},
    "dicomweb.instance_metadata": {"get": _op("WADO-RS: instance metadata", "dicomweb", _METADATA)},
    **{f"dicomweb.{level}_{kind}": {"get": _op(f"WADO-RS: {level} {kind}", "dicomweb", _RENDERED)}
       for level in ("study", "series", "instance") for kind in ("rendered", "thumbnail")},
    **{f"dicomweb.frame_{kind}": {"get": _op(f"WADO-RS: frame {kind}", "dicomweb", _RENDERED)}
       for kind in ("rendered", "thumbnail")},
    "dicomweb.wado_uri": {"get": _op("WADO-URI: one object by its UIDs", "dicomweb", _WADO, parameters=[
        _q("requestType", "WADO", True), _q("studyUID", "Study Instance UID", True, **_UID),
        _q("seriesUID", "Series Instance UID", True, **_UID), _q("objectUID", "SOP Instance UID", True, **_UID),
        _q("contentType", "application/dicom, image/jpeg ...")])},
}

# FHIR operations served but not in the CapabilityStatement (their paths are under the FHIR catch-all rule)
EXTRA_FHIR_PATHS: dict[str, dict[str, Any]] = {
    "/fhir/DiagnosticReport/{id}/$render": {"get": _op(
        "A DiagnosticReport as PDF (also GET /fhir/DiagnosticReport/{id} with Accept: application/pdf)", "fhir",
        {"200": _media("the report", "application/pdf"), "401": _OO, "403": _OO, "404": _OO},
        parameters=[{"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": r"^[A-Za-z0-9\-.]{1,64}$"}}])},
}


class _Plugin(FlaskPlugin):
    """flask-smorest's Flask plugin, also taking literal paths (`spec.path(path=...)`) for the
    operations under the FHIR catch-all rule."""

    def path_helper(self, rule: Any = None, operations: Any = None, parameters: Any = None,
                    **kwargs: Any) -> str | None:
        if rule is None:
            return None
        return super().path_helper(rule, operations, parameters, **kwargs)


def _described(view: Any) -> str:
    doc = (getattr(view, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "(undocumented)"


def own_spec(app: Flask, version: str) -> dict[str, Any]:
    """OpenAPI 3 paths and components of every non-FHIR rule of `app` (see the module doc)."""
    spec = APISpec(title="fhirserver", version=version, openapi_version="3.0.3",
                   plugins=[_Plugin(), MarshmallowPlugin()])
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        endpoint = rule.endpoint
        if endpoint in _SKIP_ENDPOINTS or endpoint.startswith(_SKIP_PREFIXES):
            continue
        methods = {m.lower() for m in rule.methods or ()} & set(_METHODS)
        known = OPERATIONS.get(endpoint)
        if known is not None:
            ops = {m: op for m, op in known.items() if m in methods}
        else:  # a rule nobody described yet: listed all the same, from its docstring
            summary = _described(app.view_functions.get(endpoint))
            ops = {m: _op(summary, "other", {"default": {"description": "see the route's documentation"}})
                   for m in methods}
        if ops:
            ops = _copy(ops)
            if endpoint not in _BEARER and not endpoint.startswith("dicomweb."):
                for op in ops.values():
                    op.setdefault("security", [])  # open: probes, discovery, the OAuth flow itself
            spec.path(rule=rule, operations=ops, app=app)
    for path, ops in EXTRA_FHIR_PATHS.items():
        spec.path(path=path, operations=_copy(ops))
    return spec.to_dict()


def _copy(ops: dict[str, Any]) -> dict[str, Any]:
    """Deep copy: apispec rewrites operations in place (schema classes to $refs, path parameters)."""
    return copy.deepcopy(ops)
