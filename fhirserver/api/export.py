"""HTTP of Bulk Data `$export`: kick-off, status polling, cancellation and file download.

Kick-off (`[base]/$export`, `[base]/Patient/$export`, `[base]/Group/{id}/$export`, GET or POST)
needs `Prefer: respond-async` and answers 202 with the status URL in `Content-Location`. The
status URL answers 202 (`X-Progress`, `Retry-After`) while the job runs, then 200 with the
manifest; DELETE cancels. Status and files answer only the client (and user) who asked; for
anyone else they do not exist (404).
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request

from fhirserver.api.formats import choose_output, parse_body
from fhirserver.errors import FhirError
from fhirserver.operations import export

RETRY_AFTER_SECONDS = 2


def _services() -> Any:
    return current_app.extensions["fhirserver"]


def _caller() -> tuple[Any, Any]:
    from smart_auth import access_for_request

    return access_for_request(), getattr(g, "fhir_principal", None)


def _prefer() -> set[str]:
    return {p.strip().lower().replace(" ", "") for p in request.headers.get("Prefer", "").replace(";", ",").split(",")}


def _kick_off(level: str, group_id: str | None = None) -> Response:
    g.fhir_output = choose_output(None, None)  # errors as FHIR JSON
    prefer = _prefer()
    if "respond-async" not in prefer:
        raise FhirError(400, "$export runs asynchronously: send Prefer: respond-async", "invalid")
    body = None
    if request.method == "POST" and request.get_data(cache=True):
        body, _kind = parse_body(request.content_type, request.get_data(cache=True))
    services = _services()
    access, principal = _caller()
    req = export.parse_request(level, group_id, list(request.args.items(multi=True)), body,
                               lenient="handling=lenient" in prefer, base=services.fhir_base())
    export_id = export.kick_off(services, access, principal, req, request.url)
    if principal is not None:
        services.audit.record(who={"reference": principal.fhir_user, "client_id": principal.client_id},
                              action="E", interaction="export", references=[], query=request.query_string.decode()[:1000],
                              remote=request.remote_addr)
    resp = Response(status=202)
    resp.headers["Content-Location"] = f"{services.fhir_base()}/$export-status/{export_id}"
    return resp


def _mine(export_id: str) -> dict[str, Any]:
    access, principal = _caller()
    row = export.find(_services(), export_id, export.owner_of(principal, access))
    if row is None:
        raise FhirError(404, f"No export {export_id} (finished long ago, cancelled, or not yours)", "not-found")
    return row


def _status(export_id: str) -> Response:
    g.fhir_output = choose_output(None, None)
    row = _mine(export_id)
    services = _services()
    if request.method == "DELETE":
        export.cancel(services, row)
        return Response(status=202)
    if row["state"] in (export.ACCEPTED, export.RUNNING):
        resp = Response(status=202)
        resp.headers["X-Progress"] = (row["progress"] or "queued")[:100]
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp
    if row["state"] == export.FAILED:
        raise FhirError(500, f"The export failed: {row['error_text'] or 'unknown error'}", "exception")
    resp = Response(orjson.dumps(export.manifest(services, row)), status=200, content_type="application/json")
    resp.headers["Expires"] = _http_date(row["expires"])
    return resp


def _http_date(ms: int) -> str:
    from email.utils import formatdate

    return formatdate(ms / 1000, usegmt=True)


def _file(export_id: str, name: str) -> Response:
    g.fhir_output = choose_output(None, None)
    row = _mine(export_id)
    entry = export.file_known(row, name)
    if entry is None:
        raise FhirError(404, f"The export {export_id} has no file {name}", "not-found")
    try:
        chunks = export.blobs(_services()).stream(entry["key"]) if entry.get("key") else None
    except FileNotFoundError:
        chunks = None
    if chunks is None:  # expired meanwhile, or written by a release that kept files by name
        raise FhirError(404, f"The file {name} is gone", "not-found")
    _, principal = _caller()
    if principal is not None:
        _services().audit.record(who={"reference": principal.fhir_user, "client_id": principal.client_id},
                                 action="R", interaction="export-file", references=[],
                                 query=f"{export_id}/{name}", remote=request.remote_addr)
    return Response(chunks, status=200, content_type="application/fhir+ndjson")


def add_routes(bp: Blueprint) -> None:
    """Static rules on the FHIR blueprint (they win over its catch-all), behind its authentication."""
    bp.add_url_rule("/$export", "export_system", lambda: _kick_off("system"), methods=["GET", "POST"])
    bp.add_url_rule("/Patient/$export", "export_patient", lambda: _kick_off("patient"), methods=["GET", "POST"])
    bp.add_url_rule("/Group/<group_id>/$export", "export_group", lambda group_id: _kick_off("group", group_id),
                    methods=["GET", "POST"])
    bp.add_url_rule("/$export-status/<export_id>", "export_status", _status, methods=["GET", "DELETE"])
    bp.add_url_rule("/$export-file/<export_id>/<name>", "export_file", _file, methods=["GET"])
