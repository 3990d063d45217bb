"""The lean path for WADO-RS instance retrieval, `GET /dicomweb/studies/{s}/series/{se}/instances/{sop}`
as multipart/related, and for QIDO-RS searches (`GET /dicomweb/studies?...`, `.../series`,
`.../instances` at every level), answered without Flask's request machinery, in front of the
Flask app.

Retrieving one instance is most of a viewer's DICOMweb traffic, and Flask's request (context, URL
adapter, before/after hooks, a Response object) cost more CPU than the retrieval. As with the FHIR
lean reads (`fhirserver.api.lean`), this WSGI layer answers only when everything about the request
is already known, and passes anything else to the Flask app unchanged:

- the URL is an instance's, its UIDs are digits and dots, and there is no query string;
- the Accept header is one of the multipart values negotiated at start (`wado.accept_plan`'s
  answer: multipart, the instance as stored);
- no Origin (CORS), and the method is GET;
- the caller is the `--insecure-no-auth` open policy, or a valid bearer token whose policy
  depends on the token alone (`smart_auth.lean_access`), and that policy lets it read
  ImagingStudy;
- the access gate's query (`common.path_rows`: the policy's condition in the same statement)
  finds the instance.

A search runs the Flask handler's own code (`qido.answer`) on a plain werkzeug request of the
same environ (same query parsing), declining on any error it raises (400, 404, 406...) before
anything is audited, so the Flask app words those.

The answer is the Flask handler's (same framing, headers Content-Type, Content-Length, Warning,
X-Request-ID), counted and logged by the same `RequestLog`, and audited by the same AuditEvent.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable, Iterator

from werkzeug.wrappers import Request

from dicom import audit as dicom_audit
from dicom.web import qido
from dicom.web.common import DICOM_JSON, path_rows
from dicom.web.multipart import new_boundary
from dicom.web.wado import CHUNK, accept_plan
from fhirserver import requestid

log = logging.getLogger("fhirserver.dicomweb")
_INSTANCE = re.compile(r"^/dicomweb/studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances/([0-9.]{1,64})$")
ROUTE = "/dicomweb/studies/<study>/series/<series>/instances/<sop>"  # the Flask rule, for the metrics
_SEARCH = re.compile(r"^/dicomweb/(?:(studies|series|instances)|studies/([0-9.]{1,64})/(series|instances)"
                     r"|studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances)$")
_LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
# Accept values viewers and the bench send for instances; each is negotiated once, at start
_ACCEPTS = ('multipart/related; type="application/dicom"', "multipart/related; type=application/dicom",
            'multipart/related;type="application/dicom"', 'multipart/related; type="application/dicom"; '
            "transfer-syntax=*", 'multipart/related; type="application/dicom";transfer-syntax=*')
Access = Callable[[str], "tuple[Any, Any] | None"]


def _multipart_accepts() -> frozenset[str]:
    ok = set()
    for accept in _ACCEPTS:
        try:
            single, syntaxes = accept_plan(accept)
        except Exception:  # noqa: BLE001 - not one the lean path answers
            continue
        if not single and syntaxes is None:
            ok.add(accept)
    return frozenset(ok)


class LeanRetrieve:
    """WSGI middleware: plain multipart retrievals of one instance here, everything else to `app`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], services: Any, report: Any, reads: Any,
                 open_policy: Any = None, bearer_access: Access | None = None) -> None:
        self.app = app
        self.services = services
        self.report = report
        self.reads = reads
        self.open_policy = open_policy
        self.bearer_access = bearer_access
        self.accepts = _multipart_accepts()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = self._try(environ)
        if answer is None:
            return self.app(environ, start_response)
        headers, body = answer
        start_response("200 OK", headers)
        return body

    def _caller(self, environ: dict[str, Any]) -> tuple[Any, Any] | None:
        """(principal or None, policy) of the request, None for the full path to decide."""
        if self.open_policy is not None:
            return None, self.open_policy
        auth = environ.get("HTTP_AUTHORIZATION")
        if not auth or self.bearer_access is None:
            return None
        return self.bearer_access(auth)

    def _try(self, environ: dict[str, Any]) -> tuple[list[tuple[str, str]], Iterable[bytes]] | None:
        if environ.get("REQUEST_METHOD") != "GET" or "HTTP_ORIGIN" in environ:
            return None
        path = environ.get("PATH_INFO") or ""
        if not path.startswith("/dicomweb/"):
            return None
        if environ.get("QUERY_STRING"):
            return self._search(environ, path)
        m = _INSTANCE.match(path)
        if m is None:
            return self._search(environ, path)
        if environ.get("HTTP_ACCEPT") not in self.accepts:
            return None
        t0 = time.perf_counter()
        caller = self._caller(environ)
        if caller is None:
            return None
        principal, policy = caller
        study, series, sop = m.group(1), m.group(2), m.group(3)
        try:
            policy.check_interaction("read", "ImagingStudy")
            row = path_rows(self.reads, policy, study, series, sop)[0]
            store = self.services.blobs
            data = _whole(store, row.storage_key, row.size)
        except Exception:  # noqa: BLE001 - 403, 404, a missing file...: the full path answers it
            log.debug("lean WADO-RS of %s deferred to the full path", sop, exc_info=True)
            return None
        rid = requestid.accept_or_new(environ.get("HTTP_X_REQUEST_ID"))
        token = requestid.bind(rid)
        try:
            info = dicom_audit.event_info(
                "retrieve", [study], "WADO-RS 1 instance(s)", channel="dicomweb",
                client=getattr(principal, "client_id", None), user=getattr(principal, "fhir_user", None),
                remote=environ.get("REMOTE_ADDR") or "unknown", what=f"GET {path}")
            dicom_audit.queue(self.services.audit, info)
        finally:
            requestid.unbind(token)
        boundary = new_boundary()
        head = (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={row.transfer_syntax}"
                f"\r\n\r\n").encode("latin-1")
        tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
        length = len(head) + row.size + len(tail)
        body: Iterable[bytes]
        if data is not None:  # one write: the framing and the file
            body = [b"".join((head, data, tail))]
        else:
            body = _framed(head, store.stream(row.storage_key, chunk_size=CHUNK), tail)
        headers = [("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'),
                   ("Content-Length", str(length)), (requestid.HEADER, rid)]
        self.report.done(environ, ROUTE, 200, time.perf_counter() - t0, rid, length,
                         getattr(principal, "client_id", None))
        return headers, body


    def _search(self, environ: dict[str, Any], path: str) -> tuple[list[tuple[str, str]], Iterable[bytes]] | None:
        """A QIDO-RS search by `qido.answer`, or None (not a search URL, or any error)."""
        m = _SEARCH.match(path)
        if m is None:
            return None
        t0 = time.perf_counter()
        caller = self._caller(environ)
        if caller is None:
            return None
        principal, policy = caller
        if m.group(1):
            level, fixed, route = _LEVELS[m.group(1)], {}, f"/dicomweb/{m.group(1)}"
        elif m.group(2):
            level, fixed = _LEVELS[m.group(3)], {"StudyInstanceUID": m.group(2)}
            route = f"/dicomweb/studies/<study>/{m.group(3)}"
        else:
            level, fixed = "IMAGE", {"StudyInstanceUID": m.group(4), "SeriesInstanceUID": m.group(5)}
            route = "/dicomweb/studies/<study>/series/<series>/instances"
        rid = requestid.accept_or_new(environ.get("HTTP_X_REQUEST_ID"))
        token = requestid.bind(rid)
        try:
            policy.check_interaction("search", "ImagingStudy")
            body, extra = qido.answer(level, fixed, Request(environ), self.services, policy, principal)
        except Exception:  # noqa: BLE001 - 400, 403, 404, 406...: the full path answers it
            log.debug("lean QIDO-RS of %s deferred to the full path", path, exc_info=True)
            return None
        finally:
            requestid.unbind(token)
        headers = [("Content-Type", DICOM_JSON), ("Content-Length", str(len(body))), *extra,
                   (requestid.HEADER, rid)]
        self.report.done(environ, route, 200, time.perf_counter() - t0, rid, len(body),
                         getattr(principal, "client_id", None))
        return headers, [body]


def _whole(store: Any, key: str, size: int) -> bytes | None:
    """The file when it is at most one chunk (read now, so a missing file goes to the full
    path), else None (streamed)."""
    if size > CHUNK:
        return None
    with store.open(key) as f:
        data = f.read()
    if len(data) != size:  # the row and the file disagree: the full path streams what is there
        raise ValueError(f"{key}: {len(data)} bytes, the index says {size}")
    return data


def _framed(head: bytes, chunks: Iterator[bytes], tail: bytes) -> Iterator[bytes]:
    yield head
    yield from chunks
    yield tail


__all__ = ["LeanRetrieve"]
