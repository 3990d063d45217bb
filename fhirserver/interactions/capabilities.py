"""The `capabilities` interaction (GET [base]/metadata): the CapabilityStatement of this server,
built from its search parameters and the operation registry the Context carries."""
from __future__ import annotations

from typing import Any

from conformance.capability import capability_statement, with_smart_security
from fhirserver.interactions.context import Context, FhirResponse


def statement(ctx: Context, published: str, *, smart: bool) -> dict[str, Any]:
    """The statement; `smart` adds the SMART security section (auth is on)."""
    out = capability_statement(ctx.base, ctx.search.supported_params, published,
                               ctx.operations.definitions)
    return with_smart_security(out, ctx.base) if smart else out


def capabilities(ctx: Context) -> FhirResponse:
    services = ctx.services
    return FhirResponse(200, statement(ctx, services.started, smart=not services.settings.insecure_no_auth))


__all__ = ["capabilities", "statement"]
