"""The gunicorn worker `serve` runs: gthread, with headers read without holding a thread and
errors gunicorn answers itself (URL or headers too large, malformed requests) as OperationOutcomes.

gthread hands a connection to a worker thread as soon as its first byte arrives, and that
thread then blocks until the header block is complete: a handful of clients sending half a
header each held every thread. Here the header block is gathered from the poller, a
non-blocking read at a time (the connection goes back to the poller between reads, holding no
thread); only a complete header block (or one past the size limits, for the parser to refuse)
takes a thread. A client that takes longer than `HEADER_SECONDS` for its headers is dropped.
"""
from __future__ import annotations

import json
import time
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import _DEFER, ThreadWorker

HEADER_SECONDS = 10.0
_STATUS = [  # gunicorn's own client errors -> (status, reason, OperationOutcome issue code)
    (http_errors.LimitRequestLine, 414, "URI Too Long", "too-long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "too-long"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented", "not-supported"),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "not-supported"),
    (http_errors.ParseException, 400, "Bad Request", "structure"),
]


def outcome_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer carrying an OperationOutcome (the connection is closed after)."""
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": message}]}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class FhirThreadWorker(ThreadWorker):
    """gthread with header blocks gathered off-thread and OperationOutcome error bodies."""

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl or getattr(conn, "is_http2", False):
            return super().handle(conn)
        gathered = self._gather_header(conn)
        if gathered is not True:
            return gathered
        try:
            return super().handle(conn)
        finally:
            conn.fhir_head = b""
            conn.fhir_since = None

    def _gather_header(self, conn: Any) -> Any:
        """True when a header block is buffered for the parser; _DEFER to wait; False to close."""
        parser = getattr(conn, "parser", None)
        if parser is not None and parser.unreader.buf.getbuffer().nbytes:
            return True  # pipelined bytes already read ahead: the parser has them
        head = getattr(conn, "fhir_head", b"")
        since = getattr(conn, "fhir_since", None) or time.monotonic()
        conn.sock.setblocking(False)
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            chunk = None
        except OSError:
            return False
        if chunk == b"":
            return False  # the client closed
        head += chunk or b""
        limit = self.cfg.limit_request_line + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2)
        if b"\r\n\r\n" not in head and len(head) <= limit:
            if time.monotonic() - since > HEADER_SECONDS:
                return False
            conn.fhir_head, conn.fhir_since = head, since
            conn.data_ready = False
            return _DEFER
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(head)
        conn.fhir_head, conn.fhir_since = b"", None
        return True

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        for cls, status, reason, code in _STATUS:
            if isinstance(exc, cls):
                self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
                try:
                    client.sendall(outcome_bytes(status, reason, code, f"{reason}: {exc}"))
                except OSError:
                    pass
                return
        super().handle_error(req, client, addr, exc)
