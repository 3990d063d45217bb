"""The FHIR interactions, transport-free: a `FhirRequest` and a `Context` in, a `FhirResponse` out.

Every entry point (the REST API, Bundle entries, the portal, the DICOM node, jobs) parses what
it received into a `FhirRequest` (`parse_path` / `parse_url`) and calls `dispatch` in a
transaction (`transact.run`); nothing here looks at HTTP.
"""
from fhirserver.interactions.context import (
    WRITE_METHODS, BinaryBody, Context, FhirRequest, FhirResponse, Handler, OperationRegistry, http_date,
)
# Named apart from their modules, so that `fhirserver.interactions.capabilities` stays the module.
from fhirserver.interactions.bundles import process as process_bundle
from fhirserver.interactions.capabilities import capabilities as capabilities_interaction
from fhirserver.interactions.checks import check_id, check_type
from fhirserver.interactions.conditional import find_matches
from fhirserver.interactions.direct_read import direct_read as direct_read_version
from fhirserver.interactions.limits import BundleBudget, client_fault
from fhirserver.interactions.reindex import reindex
from fhirserver.interactions.requests import parse_path, parse_url
from fhirserver.interactions.router import dispatch, route
from fhirserver.interactions.search import run_search
from fhirserver.interactions.transact import run as run_in_transaction, writes as request_writes

__all__ = ["Context", "FhirRequest", "FhirResponse", "Handler", "OperationRegistry", "WRITE_METHODS",
           "check_id", "check_type", "dispatch", "find_matches", "http_date", "parse_path", "parse_url",
           "reindex", "route", "run_search"]
__all__ += ["BinaryBody", "BundleBudget", "capabilities_interaction", "client_fault", "direct_read_version"]
# batch/transaction Bundles, and one interaction in a transaction with its conflict retries
__all__ += ["process_bundle", "request_writes", "run_in_transaction"]
