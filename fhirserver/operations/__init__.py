"""FHIR operations (the patients' lifecycle, sharing, erasure, merge, reports); one module per
operation.

`build_registry()` is what the app factory hands to the router (through the Context): every
`$name` with its handler, which of them write, and the OperationDefinition of each
(conformance/definitions) with the resource types it applies to, for the CapabilityStatement.

What each operation needs from its caller (scopes, principal kinds) is declared in
`fhirserver.access.operations.OPERATION_NEEDS` and checked before the handler runs
(`build_registry` wraps every handler); a handler added here without a declaration there is
refused. Inside, handlers read and write through the caller's row filter; what they need of
other packages' tables (logins, the DICOM index, share links) goes through `ports`.
"""
from __future__ import annotations

from typing import Any, Callable

from fhirserver.access import guard_all
from fhirserver.interactions import OperationRegistry, reindex
from fhirserver.operations import apps, erase, everything, invite, merge, render, sharing, unlink
from fhirserver.operations.ports import Imaging, Logins, Ports, Shares
from fhirserver.operations.render import concept_text, human_name, invoice_pdf, report_details, report_pdf, share_url_for
from fhirserver.operations.sharing import _consent as sharing_consent  # the Consent a clinic's access grant writes
from fhirserver.subscriptions import operations as subscriptions


def registry() -> dict[str, Callable[..., Any]]:
    """`$name` -> handler, unguarded (`build_registry` adds the access checks)."""
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
        "$render": render.render,  # a DiagnosticReport as PDF (also GET with Accept: application/pdf)
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



def build_registry() -> OperationRegistry:
    """Every operation of the server, each behind the access gate's check (`$reindex` included)."""
    return OperationRegistry(handlers=guard_all({"$reindex": reindex, **registry()}),
                             writing=frozenset({"$reindex", *WRITING}),
                             definitions=dict(OPERATION_DEFINITIONS))


__all__ = ["OPERATION_DEFINITIONS", "WRITING", "Imaging", "Logins", "Ports", "Shares", "build_registry", "registry",
           "report_details", "sharing_consent"]
# What the portal and the console show and print: names, coded text, report and invoice PDFs, share links.
__all__ += ["concept_text", "human_name", "invoice_pdf", "report_pdf", "share_url_for"]
