"""The FHIR REST blueprint: HTTP in, `FhirRequest` to the handlers, FHIR bodies and headers out."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

import smart_auth
from fhirserver.api.formats import OutputFormat, choose_output, header_map, parse_body, render, wants_pdf
from fhirserver.errors import FhirError, Issue, info, outcome
from fhirserver.interactions import (
    WRITE_METHODS, BinaryBody, BundleBudget, Context, FhirRequest, FhirResponse,
    capabilities_interaction as capabilities, client_fault, dispatch, http_date, parse_path, process_bundle, request_writes, run_in_transaction,
)
from fhirserver.storage import reading

log = logging.getLogger("fhirserver.request")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _services() -> Any:
    return current_app.extensions["fhirserver"]


def _context() -> Context:
    """The request's Context: the policy (and principal) of the caller the bearer token names."""
    return _services().context(smart_auth.access_for_request())


def _output() -> OutputFormat:
    fmt = getattr(g, "fhir_output", None)
    if fmt is None:
        fmt = choose_output(None, None)
    return fmt


def _respond(status: int, body: Any, fmt: OutputFormat, headers: dict[str, str] | None = None) -> Response:
    data = b"" if body is None else render(body, fmt)
    resp = Response(data, status=status, content_type=f"{fmt.mime}; charset=utf-8" if body is not None else None)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    if request.method == "HEAD":
        resp.set_data(b"")
    return resp


def error_response(exc: FhirError) -> Response:
    try:
        fmt = _output()
    except FhirError:
        fmt = choose_output(None, None)
    return _respond(exc.status, outcome(exc.issues), fmt, exc.headers)


def _prefer_return() -> str | None:
    for part in request.headers.get("Prefer", "").lower().replace(" ", "").split(";"):
        for p in part.split(","):
            if p.startswith("return="):
                return p[len("return="):]
    return None


def _build_request(segments: list[str]) -> FhirRequest:
    """The interaction the URL names (the one parser Bundle entries use too), with the body."""
    req = parse_path(request.method, segments, request.args.items(multi=True), header_map(request.headers))
    if request.method in ("POST", "PUT", "PATCH"):
        if request.mimetype == "application/x-www-form-urlencoded":
            req.params.extend((k, v) for k, v in request.form.items(multi=True))
        else:
            req.body, req.body_kind = parse_body(request.content_type, request.get_data(cache=False))
    return req


def _finish(req: FhirRequest, resp: FhirResponse, fmt: OutputFormat) -> Response:
    headers = dict(resp.headers)
    if resp.stored is not None:
        headers["ETag"] = resp.stored.etag
        headers["Last-Modified"] = http_date(resp.stored.last_updated)
    if resp.location:
        headers["Location"] = resp.location
        headers["Content-Location"] = resp.location
    if resp.status == 304:
        return _respond(304, None, fmt, headers)
    prefer = _prefer_return()
    is_write = req.method in WRITE_METHODS
    if req.method == "DELETE":
        if prefer == "operationoutcome" or (prefer == "representation"):
            return _respond(200, resp.outcome or info("Deleted"), fmt, headers)
        return _respond(204, None, fmt, headers)
    if is_write and prefer == "minimal":
        return _respond(resp.status, None, fmt, headers)
    if is_write and prefer == "operationoutcome":
        return _respond(resp.status, resp.outcome or info("Done"), fmt, headers)
    return _respond(resp.status, resp.body, fmt, headers)


def _handle(path: str = "") -> Response:
    pdf = request.method in ("GET", "HEAD") and wants_pdf(path, request.headers.get("Accept"))
    g.fhir_output = choose_output(request.args.get("_format"), None if pdf else request.headers.get("Accept"),
                                  request.args.get("_pretty"), request.args.get("_summary"),
                                  request.args.get("_elements"))
    segments = [s for s in path.split("/") if s]
    services = _services()
    ctx = _context()
    req = _build_request(segments)
    if pdf:
        req.operation = "$render"
    if services.search.due():
        with reading(services.repo.engine) as conn:
            services.search.refresh(conn)  # custom SearchParameters (cheap; at most every 2 s)
    if not segments and req.method == "POST":
        budget = BundleBudget(services.settings.max_bundle_entries, services.settings.bundle_seconds)
        result = process_bundle(ctx, services.repo, req.body, req.headers, budget)
        _audit(req, result)
        return _respond(200, result, g.fhir_output)
    single = req.method in ("GET", "HEAD") and req.res_id is not None and req.compartment is None and (
        req.operation is None or (req.operation == "_history" and req.version_id is not None))
    # a search only reads, and under READ COMMITTED each of its statements (page, count,
    # includes) takes its own snapshot inside a transaction too: BEGIN and COMMIT add two
    # round trips and no consistency
    single = single or (req.method in ("GET", "HEAD") and req.operation is None
                        and (req.res_id is None or req.compartment is not None))
    resp = run_in_transaction(services.repo, lambda tx: dispatch(ctx, tx, req),
                        write=request_writes(req, ctx.operations), single_read=single)
    _audit(req, resp.body if resp.stored is None else None, resp)
    if isinstance(resp.body, BinaryBody):
        return Response(bytes(resp.body), status=resp.status, mimetype=resp.body.mime)
    return _finish(req, resp, g.fhir_output)


_ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}


def _audit(req: FhirRequest, bundle: Any, resp: FhirResponse | None = None) -> None:
    """Queue an AuditEvent for an authenticated access (see fhirserver.audit)."""
    principal = getattr(g, "fhir_principal", None)
    if principal is None:
        return
    record = access_record(req, bundle, resp, request.query_string.decode())
    if record is not None:
        _services().audit.record(who={"reference": principal.fhir_user, "client_id": principal.client_id},
                                 remote=request.remote_addr, **record)


def plain_search(services: Any, policy: Any, req: FhirRequest) -> FhirResponse:
    """A type-level search under `policy`, as `_handle` runs it (custom SearchParameters picked
    up, one autocommit read): for the lean path, which answers plain searches before Flask."""
    ctx = services.context(policy)
    if services.search.due():
        with reading(services.repo.engine) as conn:
            services.search.refresh(conn)
    return run_in_transaction(services.repo, lambda tx: dispatch(ctx, tx, req), write=False, single_read=True)


def access_record(req: FhirRequest, bundle: Any, resp: FhirResponse | None, query_string: str,
                  ) -> dict[str, Any] | None:
    """What the audit trail records of one answered interaction (action, interaction, the
    resources it touched, a search's query), or None when nothing is to be recorded: shared by
    the Flask path and the lean path (`fhirserver.api.lean`), so both are audited alike."""
    if req.res_type == "AuditEvent":
        return None
    refs: list[str] = []
    if resp is not None and resp.stored is not None:
        refs.append(f"{resp.stored.res_type}/{resp.stored.res_id}")
    elif isinstance(bundle, dict):
        for e in bundle.get("entry") or []:
            url = e.get("fullUrl") or (e.get("response") or {}).get("location") or ""
            if "/fhir/" in url:
                refs.append("/".join(url.split("/fhir/", 1)[1].split("/")[:2]))
    if not refs and resp is not None and resp.status >= 300:
        return None
    searching = isinstance(bundle, dict) and bundle.get("type") == "searchset"
    action = "E" if searching or (isinstance(bundle, dict) and req.res_type is None) else _ACTIONS.get(req.method, "E")
    interaction = ("search-type" if searching else "history-instance" if req.operation == "_history"
                   else "vread" if req.version_id else {"R": "read", "C": "create", "U": "update",
                                                         "D": "delete"}.get(action, "transaction"))
    return {"action": action, "interaction": interaction, "references": refs,
            "query": query_string[:1000] if searching else None}


def _metadata() -> Response:
    g.fhir_output = choose_output(request.args.get("_format"), request.headers.get("Accept"),
                                  request.args.get("_pretty"))
    if request.method not in ("GET", "HEAD"):
        raise FhirError(405, "metadata takes GET", "not-supported")
    return _respond(200, capabilities(_context()).body, g.fhir_output)


def blueprint() -> Blueprint:
    bp = Blueprint("fhir", __name__)
    bp.before_request(smart_auth.before_fhir_request)  # the bearer token -> g.fhir_principal; CORS
    bp.after_request(smart_auth.after_fhir_request)
    bp.add_url_rule("/metadata", "metadata", _metadata, methods=METHODS)
    from fhirserver.api import export  # Bulk Data $export: kick-off, status, files

    export.add_routes(bp)
    bp.add_url_rule("", "base", _handle, methods=METHODS, strict_slashes=False)
    bp.add_url_rule("/<path:path>", "fhir", _handle, methods=METHODS)
    return bp


def install_error_handlers(app: Flask) -> None:
    """Every failure leaves as an OperationOutcome; a bug is a 500 without its traceback."""

    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}.get(
            exc.code or 500, "processing")
        msg = exc.description or exc.name
        if exc.code == 413:
            msg = f"The request body is larger than the limit of {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        if not request.path.startswith("/fhir"):
            return exc.get_response()
        return error_response(FhirError(exc.code or 500, [Issue("error", code, msg)]))

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Response:
        known = client_fault(exc)  # malformed chunked bodies, cancelled statements...
        if known is not None:
            return error_response(known)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(FhirError(500, "Internal server error; the request was not applied", "exception"))
