"""The request id: one token that ties a client's request to its log line, its response header
and the AuditEvents it caused.

A caller's `X-Request-ID` is kept when it is a short printable token (so a proxy's or client's id
carries through); anything else is replaced by a fresh one, since the value lands in logs and
audit records. The id of the request being served lives in a context variable, set and reset
around each request by the HTTP layer, so the audit writer tags events without HTTP in its
signature.
"""
from __future__ import annotations

import contextvars
import re
import uuid

HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:@/+=\-]{1,128}$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("fhirserver_request_id", default=None)


def accept_or_new(offered: str | None) -> str:
    """The caller's id if it is a safe token, else a new random one."""
    if offered and _ACCEPTED.match(offered):
        return offered
    return uuid.uuid4().hex


def bind(request_id: str) -> contextvars.Token[str | None]:
    return _current.set(request_id)


def unbind(token: contextvars.Token[str | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # set in another context (a copied one): just clear ours
        _current.set(None)


def current() -> str | None:
    """The id of the request this thread is serving, if any."""
    return _current.get()
