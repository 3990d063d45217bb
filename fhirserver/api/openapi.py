"""OpenAPI 3 at `/openapi.json`, interactive docs at `/docs`.

The FHIR part is generated from the CapabilityStatement (as HAPI's OpenAPI interceptor does), so
the document names exactly the types, interactions, search parameters and operations the server
supports; the server's own endpoints (OAuth, DICOMweb, probes, metrics) come from flask-smorest's
apispec plugins over the app's URL map (`fhirserver.api.apidoc`) and are merged in. The docs
page is Swagger UI served from the `swagger-ui-bundle` package: no CDN, works offline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, send_from_directory

from fhirserver.api.apidoc import own_spec

_FHIR_JSON = {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/Resource"}}}
_OK = {"description": "OK", "content": _FHIR_JSON}
_ERR = {"description": "OperationOutcome", "content": _FHIR_JSON}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_VID = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}}
_BODY = {"required": True, "content": _FHIR_JSON}
_SEARCH_TYPES = {"number": "number"}


def _op(summary: str, tag: str, params: list[dict[str, Any]] | None = None, body: bool = False,
        ok: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": params or [],
                          "responses": {"200": ok or _OK, "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR}}
    if body:
        op["requestBody"] = _BODY
    return op


def _resource_paths(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    t = res["type"]
    codes = {i.get("code") for i in res.get("interaction") or []}
    search = [{"name": p["name"], "in": "query", "required": False, "description": p.get("documentation", ""),
               "schema": {"type": _SEARCH_TYPES.get(p.get("type", ""), "string")}}
              for p in res.get("searchParam") or [] if p.get("name")]
    paths: dict[str, dict[str, Any]] = {}
    kind: dict[str, Any] = {}
    if "search-type" in codes:
        kind["get"] = _op(f"Search {t}", t, search)
    if "create" in codes:
        kind["post"] = _op(f"Create a {t}", t, body=True, ok={"description": "Created", "content": _FHIR_JSON})
    if kind:
        paths[f"/fhir/{t}"] = kind
    inst: dict[str, Any] = {}
    if "read" in codes:
        inst["get"] = _op(f"Read a {t}", t, [_ID])
    if "update" in codes:
        inst["put"] = _op(f"Update a {t}", t, [_ID], body=True)
    if "patch" in codes:
        inst["patch"] = _op(f"Patch a {t} (JSON Patch)", t, [_ID], body=True)
    if "delete" in codes:
        inst["delete"] = _op(f"Delete a {t}", t, [_ID])
    if inst:
        paths[f"/fhir/{t}/{{id}}"] = inst
    if "history-instance" in codes:
        paths[f"/fhir/{t}/{{id}}/_history"] = {"get": _op(f"History of a {t}", t, [_ID])}
    if "vread" in codes:
        paths[f"/fhir/{t}/{{id}}/_history/{{vid}}"] = {"get": _op(f"Read a version of a {t}", t, [_ID, _VID])}
    for op in res.get("operation") or []:
        name = op.get("name")
        if name:
            paths.setdefault(f"/fhir/{t}/{{id}}/${name}", {})["get"] = _op(f"${name} on a {t}", t, [_ID])
    return paths


def openapi_document(services: Any, app: Flask | None = None) -> dict[str, Any]:
    """The whole API as OpenAPI 3.0: the FHIR part from the CapabilityStatement of this running
    server, merged with the part flask-smorest/apispec generates for `app`'s own routes."""
    cs = services.capability_statement()
    paths: dict[str, Any] = {
        "/fhir/metadata": {"get": _op("CapabilityStatement", "server")},
        "/fhir": {"post": _op("batch or transaction Bundle", "server", body=True)},
    }
    for rest in cs.get("rest") or []:
        for res in rest.get("resource") or []:
            paths.update(_resource_paths(res))
    version = str(cs.get("software", {}).get("version") or cs.get("version") or "1")
    own: dict[str, Any] = own_spec(app, version) if app is not None else {}
    for path, ops in (own.get("paths") or {}).items():
        paths.setdefault(path, {}).update(ops)
    schemas = {"Resource": {"type": "object", "required": ["resourceType"],
                            "properties": {"resourceType": {"type": "string"}}},
               **((own.get("components") or {}).get("schemas") or {})}
    return {
        "openapi": "3.0.3",
        "info": {"title": "fhirserver", "version": version,
                 "description": "FHIR R4 REST API generated from the CapabilityStatement at /fhir/metadata"},
        "servers": [{"url": services.root_url()}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fhirserver API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script></body></html>"""
_INIT_JS = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});"""


def _swagger_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def blueprint() -> Blueprint:
    bp = Blueprint("openapi", __name__)

    @bp.get("/openapi.json")
    def _openapi() -> Response:
        return jsonify(openapi_document(current_app.extensions["fhirserver"], current_app))

    @bp.get("/docs")
    def _docs() -> Response:
        return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")

    @bp.get("/docs/init.js")
    def _init() -> Response:  # a file, not inline: pages may run under a script-src 'self' policy
        return Response(_INIT_JS, content_type="application/javascript")

    @bp.get("/docs/static/<path:name>")
    def _static(name: str) -> Response:
        folder = _swagger_dir()
        if folder is None:
            abort(404)
        return send_from_directory(folder, name, max_age=86400)

    return bp
