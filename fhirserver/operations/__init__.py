"""FHIR operations of the patients' lifecycle (issue 7); one module per operation.

`registry()` maps `$name` to its handler for `fhirserver.api.interactions.operations()`;
`OPERATION_DEFINITIONS` names the OperationDefinition of each (conformance/definitions) with the
resource types it applies to, for the CapabilityStatement.

What each operation needs from its caller (scopes, principal kinds) is declared in
`fhirserver.access.operations.OPERATION_NEEDS` and checked before the handler runs
(`interactions.operations()` wraps every handler); a handler added here without a declaration
there is refused. Inside, handlers read and write through the caller's row filter.
"""
from __future__ import annotations

from typing import Any, Callable


def registry() -> dict[str, Callable[..., Any]]:
    from fhirserver.operations import apps, erase, everything, invite, merge, render, sharing, unlink
    from fhirserver.subscriptions import operations as subscriptions

    return {
        "$invite": invite.invite,
        "$find-by-email": sharing.find_by_email,
        "$request-access": sharing.request_access,
        "$access-requests": sharing.access_requests,
        "$respond-access": sharing.respond_access,
        "$access-log": sharing.access_log,
        "$unlink": unlink.unlink,
        "$close": unlink.close,
        "$reactivate": unlink.reactivate,
        "$merge": merge.merge,
        "$erase": erase.erase,
        "$everything": everything.everything,
        "$render": render.render,  # issue 8: DiagnosticReport as PDF
        "$connected-apps": apps.connected_apps,
        "$revoke-app": apps.revoke_app,
        "$status": subscriptions.status,  # topic-based Subscriptions (backport IG)
        "$events": subscriptions.events,
    }


# Operations that write (rows, AuditEvents) whatever the HTTP method: their transaction starts as
# a writer (BEGIN IMMEDIATE on SQLite). A read-only operation called with POST stays a reader.
WRITING = frozenset({"$invite", "$find-by-email", "$request-access", "$respond-access", "$access-log",
                     "$unlink", "$close", "$reactivate", "$merge", "$erase", "$revoke-app"})

# name -> (OperationDefinition id, resource types)
OPERATION_DEFINITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "invite": ("Patient-invite", ("Patient", "RelatedPerson")),
    "find-by-email": ("Patient-find-by-email", ("Patient",)),
    "request-access": ("Patient-request-access", ("Patient",)),
    "access-requests": ("Patient-access-requests", ("Patient",)),
    "respond-access": ("Patient-respond-access", ("Patient",)),
    "access-log": ("Patient-access-log", ("Patient",)),
    "unlink": ("Patient-unlink", ("Patient",)),
    "close": ("Patient-close", ("Patient",)),
    "reactivate": ("Patient-reactivate", ("Patient",)),
    "merge": ("Patient-merge", ("Patient",)),
    "erase": ("Patient-erase", ("Patient",)),
    "everything": ("Patient-everything", ("Patient",)),
    "connected-apps": ("Patient-connected-apps", ("Patient",)),
    "revoke-app": ("Patient-revoke-app", ("Patient",)),
}

__all__ = ["OPERATION_DEFINITIONS", "WRITING", "registry"]
