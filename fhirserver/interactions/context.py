"""What every interaction takes and gives: the request, the response, and the Context.

The Context is the one thing a handler (or an operation) gets from its caller besides the
transaction: who is asking (principal and access policy), the server's services, the operation
registry, paging limits. Nothing here knows how the request arrived (HTTP, a Bundle entry, the
portal, the DICOM node, a job).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Callable, Mapping

from fhirserver.access import DenyPolicy, Policy
from fhirserver.errors import bad_request
from fhirserver.model import parse_count


@dataclasses.dataclass
class FhirRequest:
    """One interaction, independent of how it arrived."""

    method: str
    res_type: str | None = None
    res_id: str | None = None
    version_id: str | None = None
    operation: str | None = None          # "_history", "_search", "$op"
    params: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # lower-case names
    body: Any = None                       # parsed resource / patch document
    body_kind: str = "resource"            # resource | json-patch | merge-patch
    compartment: tuple[str, str] | None = None  # /Patient/123/Observation
    assigned_id: str | None = None         # id chosen ahead of a create (transaction urn:uuid)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower())
        return value if value not in (None, "") else None

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def count_param(self, name: str, problem: str | None = None) -> int | None:
        """Parameter `name` as a non-negative integer (None when absent); when it is not one, a
        400 saying `problem` (by default: what it must be, and what was sent)."""
        raw = self.param(name)
        if raw is None:
            return None
        value = parse_count(raw)
        if value is None:
            raise bad_request(problem or f"{name} must be a non-negative integer, not '{raw}'")
        return value


@dataclasses.dataclass
class FhirResponse:
    """What an interaction produced: a status, a body, the headers that describe it."""

    status: int
    body: Any = None                       # dict, stored JSON text, or None
    stored: Any = None                     # the storage.Stored version the body is (ETag/Last-Modified)
    location: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    outcome: dict | None = None            # OperationOutcome to show under Prefer: return=OperationOutcome


class BinaryBody(bytes):
    """A response body sent as it is, not as a FHIR resource (a PDF report)."""

    mime = "application/octet-stream"


Handler = Callable[["Context", Any, FhirRequest], FhirResponse]


@dataclasses.dataclass(frozen=True)
class OperationRegistry:
    """The `$operations` a server offers, built by the app factory and handed to the router.

    handlers: `$name` -> handler (already wrapped by the access gate's checks);
    writing: the operations that write whatever their HTTP method (their transaction starts as
    a writer); definitions: `name` -> (OperationDefinition id, resource types), for the
    CapabilityStatement.
    """

    handlers: Mapping[str, Handler] = dataclasses.field(default_factory=dict)
    writing: frozenset[str] = frozenset()
    definitions: Mapping[str, tuple[str, tuple[str, ...]]] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> Handler | None:
        return self.handlers.get(name)

    def writes(self, name: str) -> bool:
        # an operation this registry does not know may write: start it as a writer (it is
        # refused anyway when it is dispatched)
        return name in self.writing or name not in self.handlers


@dataclasses.dataclass
class Context:
    """What handlers need besides the transaction.

    `principal` is who is asking (None for the server's own jobs and the no-auth mode); `access`
    the policy deciding for them; `services` the server's shared services (settings, repository,
    audit trail); `operations` the registry the router looks `$operations` up in.
    """

    base: str
    default_count: int = 50
    max_count: int = 1000
    postgres: bool = False
    access: Policy = dataclasses.field(default_factory=DenyPolicy)  # fail closed
    search: Any = None                     # fhirserver.search.SearchEngine
    services: Any = None                   # fhirserver.services.Services (settings, repo, audit)
    operations: OperationRegistry = dataclasses.field(default_factory=OperationRegistry)
    principal: Any = None                  # fhirserver.access.Principal, if a person or client asks

    def __post_init__(self) -> None:
        if self.principal is None:
            self.principal = getattr(self.access, "principal", None)

    def page_size(self, req: FhirRequest) -> int:
        count = req.count_param("_count")
        return self.default_count if count is None else min(count, self.max_count)

    def after_commit(self, tx: Any, fn: Callable[[], None]) -> None:
        """Run `fn` once `tx` has committed (never when it rolls back): files to delete, mail to
        send, caches to drop."""
        tx.on_commit.append(fn)


def http_date(t: datetime) -> str:
    return format_datetime(t.astimezone(timezone.utc), usegmt=True)


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

__all__ = ["BinaryBody", "Context", "FhirRequest", "FhirResponse", "Handler", "OperationRegistry", "WRITE_METHODS",
           "http_date"]
