"""The `capabilities` interaction (GET [base]/metadata): the CapabilityStatement of this server,
as its Services build it (search parameters, the operation registry, subscription topics), plus
the SMART security section when auth is on."""
from __future__ import annotations

from conformance import with_smart_security
from fhirserver.interactions.context import Context, FhirResponse


def capabilities(ctx: Context) -> FhirResponse:
    services = ctx.services
    out = services.capability_statement()
    if not services.settings.insecure_no_auth:
        out = with_smart_security(out, ctx.base)
    return FhirResponse(200, out)


__all__ = ["capabilities"]
