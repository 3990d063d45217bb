"""The lean path for reads by id: `GET|HEAD /fhir/{type}/{id}[/_history/{vid}]` answered from the
stored bytes without Flask's request machinery, in front of the Flask app; and for plain searches.

A read is most of a FHIR server's traffic, and a Flask request (request context, URL adapter,
before/after hooks, a Response object, a SQLAlchemy transaction) costs several times the read
itself. This WSGI layer answers a read when the answer is a plain 200 and everything about the
request is already known:

- the URL is a read or vread by id, without a query string (no `_format`, `_summary`, ...);
- the Accept header is one of the values negotiated at start (`choose_output`'s answers, kept);
- no conditional headers (If-None-Match, If-Modified-Since) and no Origin (CORS);
- the caller is the `--insecure-no-auth` open policy, or a valid bearer token whose policy
  depends on the token alone (`smart_auth.lean_access`: authlib's ResourceProtector over the
  cached token check, so a cached token costs no database round trip);
- the access gate lets the caller see the row (`interactions.direct_read`, the policy's own
  conditions compiled into one statement per audience) and the row is not deleted.

Type-level searches (`GET /fhir/{type}?...`) take the same layer when their answer is a plain
JSON searchset: no output parameter (`_format`, `_pretty`, `_summary`, `_elements`), no Prefer,
the same callers; the search itself is the Flask path's (`api.http.plain_search`), and a search
cancelled at its time budget is answered here (503) rather than run twice.

Anything else, including any error, goes to the Flask app unchanged, which decides and words
every other answer (401 challenges, 403, 404, 410, 304, OperationOutcomes). The lean answer
carries the same headers as the Flask one (Content-Type, Content-Length, ETag, Last-Modified,
X-Request-ID), is counted and logged by the same `RequestLog`, and queues the same AuditEvent.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable

from werkzeug.wrappers import Request

from fhirserver import requestid
from fhirserver.api.formats import OutputFormat, choose_output, header_map, render
from fhirserver.api.http import access_record, plain_search
from fhirserver.api.telemetry import RequestLog, fhir_route
from fhirserver.errors import FhirError, outcome
from fhirserver.interactions import (
    FhirResponse, client_fault, direct_read_version as direct_read, http_date, parse_path,
)
from fhirserver.storage import ReadStatements

log = logging.getLogger("fhirserver.request")
_READ = re.compile(r"^/fhir/([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/([0-9]{1,9}))?$")
_SEARCH = re.compile(r"^/fhir/([A-Z][A-Za-z]{0,63})$")
_DECLINE = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_ORIGIN")
# a search with these (output shape, strict handling) is answered by the Flask app
_SEARCH_DECLINE = ("HTTP_PREFER",)
_OUTPUT_PARAMS = frozenset(("_format", "_pretty", "_summary", "_elements"))
# Accept values clients send for JSON; each is negotiated once, at start, by `choose_output`
_ACCEPTS = (None, "", "*/*", "application/fhir+json", "application/json", "application/json+fhir",
            "application/fhir+json, */*", "application/fhir+json;q=1.0, application/json;q=0.9",
            "application/json, text/plain, */*", "application/fhir+json; charset=utf-8")
Access = Callable[[str], "tuple[Any, Any] | None"]  # Authorization header -> (principal, policy)


def _formats() -> dict[str | None, OutputFormat]:
    table: dict[str | None, OutputFormat] = {}
    for accept in _ACCEPTS:
        try:
            fmt = choose_output(None, accept)
        except FhirError:
            continue
        if fmt.kind == "json" and not fmt.transforms:
            table[accept] = fmt
    return table


class LeanReads:
    """WSGI middleware: plain 200 reads by id here, everything else to `app`.

    `open_policy`: the policy of every request when the server runs without auth (else None);
    `bearer_access(authorization)`: (principal, policy) of a valid bearer token, else None;
    `audit`: the AuditTrail of authenticated reads."""

    def __init__(self, app: Callable[..., Iterable[bytes]], reads: ReadStatements, report: RequestLog,
                 audit: Any, open_policy: Any = None, bearer_access: Access | None = None,
                 services: Any = None) -> None:
        self.app = app
        self.services = services  # searches are answered here only when given
        self.reads = reads
        self.report = report
        self.audit = audit
        self.open_policy = open_policy
        self.bearer_access = bearer_access
        self.formats = _formats()
        self.content_types = {a: f"{fmt.mime}; charset=utf-8" for a, fmt in self.formats.items()}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = self._try(environ)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _try(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return None
        if any(k in environ for k in _DECLINE):
            return None
        ctype = self.content_types.get(environ.get("HTTP_ACCEPT"))
        if ctype is None:
            return None
        if environ.get("QUERY_STRING"):
            return self._try_search(environ, method)
        m = _READ.match(environ.get("PATH_INFO") or "")
        if m is None:
            return self._try_search(environ, method)
        t0 = time.perf_counter()
        caller = self._caller(environ)
        if caller is None:
            return None
        principal, policy = caller
        res_type, res_id, vid = m.group(1), m.group(2), m.group(3)
        rid = requestid.accept_or_new(environ.get("HTTP_X_REQUEST_ID"))
        token = requestid.bind(rid)
        try:
            try:
                stored = direct_read(policy, self.reads, res_type, res_id, None if vid is None else int(vid))
            except Exception:  # noqa: BLE001 - the full path meets the same fault and answers it
                log.debug("lean read of %s/%s deferred to the full path", res_type, res_id, exc_info=True)
                return None
            if stored is None:
                return None
            body = stored.body.encode()
            if principal is not None and res_type != "AuditEvent":
                self.audit.record(who={"reference": principal.fhir_user, "client_id": principal.client_id},
                                  action="R", interaction="read" if vid is None else "vread",
                                  references=[f"{res_type}/{res_id}"], remote=environ.get("REMOTE_ADDR"))
        finally:
            requestid.unbind(token)
        if method == "HEAD":
            body = b""
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("ETag", stored.etag),
                   ("Last-Modified", http_date(stored.last_updated)), (requestid.HEADER, rid)]
        self.report.done(environ, fhir_route(environ["PATH_INFO"]), 200, time.perf_counter() - t0, rid, len(body),
                         getattr(principal, "client_id", None))
        return "200 OK", headers, body

    def _refusal(self, environ: dict[str, Any], fault: FhirError, fmt: OutputFormat, rid: str, t0: float,
                 principal: Any) -> tuple[str, list[tuple[str, str]], bytes]:
        """The OperationOutcome of a search cancelled at its time budget (as the Flask app words it)."""
        body = render(outcome(fault.issues), fmt)
        headers = [("Content-Type", f"{fmt.mime}; charset=utf-8"), *(fault.headers or {}).items(),
                   ("Content-Length", str(len(body))), (requestid.HEADER, rid)]
        self.report.done(environ, fhir_route(environ["PATH_INFO"]), fault.status, time.perf_counter() - t0, rid,
                         len(body), getattr(principal, "client_id", None))
        return f"{fault.status} Service Unavailable", headers, body

    def _caller(self, environ: dict[str, Any]) -> tuple[Any, Any] | None:
        """(principal, policy) of the request, or None to let the Flask app decide (no or a bad
        token, or a policy that depends on live data)."""
        if self.open_policy is not None:
            return None, self.open_policy
        auth = environ.get("HTTP_AUTHORIZATION")
        if not auth or self.bearer_access is None:
            return None
        return self.bearer_access(auth)

    def _try_search(self, environ: dict[str, Any], method: str) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """A type-level search (`GET /fhir/{type}?...`) whose answer is a plain searchset in JSON:
        the interaction the Flask path runs (`plain_search`), without Flask's request machinery.
        Anything else (output parameters, Prefer, an error of any kind) goes to the Flask app,
        which runs the search again and words the answer."""
        if self.services is None or any(k in environ for k in _SEARCH_DECLINE):
            return None
        m = _SEARCH.match(environ.get("PATH_INFO") or "")
        if m is None:
            return None
        t0 = time.perf_counter()
        caller = self._caller(environ)
        if caller is None:
            return None
        principal, policy = caller
        request = Request(environ)  # the query parsed as Flask parses it
        params = list(request.args.items(multi=True))
        if any(k in _OUTPUT_PARAMS for k, _v in params):
            return None
        req = parse_path(method, [m.group(1)], params, header_map(request.headers))
        if req.operation is not None or req.res_id is not None:
            return None
        fmt = self.formats[environ.get("HTTP_ACCEPT")]
        rid = requestid.accept_or_new(environ.get("HTTP_X_REQUEST_ID"))
        token = requestid.bind(rid)
        try:
            try:
                resp: FhirResponse = plain_search(self.services, policy, req)
                if resp.status != 200 or resp.stored is not None or not isinstance(resp.body, dict):
                    return None
                body = render(resp.body, fmt)
            except Exception as exc:  # noqa: BLE001 - the full path meets the same fault and answers it
                fault = client_fault(exc)
                if fault is not None and fault.status == 503:  # past its time budget: not run twice
                    return self._refusal(environ, fault, fmt, rid, t0, principal)
                log.debug("lean search of %s deferred to the full path", environ.get("PATH_INFO"), exc_info=True)
                return None
            if principal is not None:
                record = access_record(req, resp.body, None, environ.get("QUERY_STRING", ""))
                if record is not None:
                    self.audit.record(who={"reference": principal.fhir_user, "client_id": principal.client_id},
                                      remote=environ.get("REMOTE_ADDR"), **record)
        finally:
            requestid.unbind(token)
        if method == "HEAD":
            body = b""
        headers = [("Content-Type", f"{fmt.mime}; charset=utf-8"), *resp.headers.items(),
                   ("Content-Length", str(len(body))), (requestid.HEADER, rid)]
        self.report.done(environ, fhir_route(environ["PATH_INFO"]), 200, time.perf_counter() - t0, rid, len(body),
                         getattr(principal, "client_id", None))
        return "200 OK", headers, body


__all__ = ["LeanReads"]
