"""Failures the client or the request's own size caused, told apart from bugs.

They surface as exceptions of the layers below HTTP (gunicorn's body reader, the database
driver cancelling a statement past its time budget, an object store that is down), which would otherwise be answered as a
500 "internal error" although nothing is wrong with the server.
"""
from __future__ import annotations

import time

from fhirserver.blobs import BlobStoreUnavailable
from fhirserver.errors import FhirError
from fhirserver.storage import is_cancelled


def client_fault(exc: BaseException) -> FhirError | None:
    """The OperationOutcome error for `exc` when it is not a bug; None when it is one."""
    module = type(exc).__module__ or ""
    if module.startswith("gunicorn.http"):  # InvalidChunkSize, ChunkMissingTerminator, NoMoreData...
        return FhirError(400, f"The request body is malformed: {exc}", "structure",
                         headers={"Connection": "close"})
    if isinstance(exc, BlobStoreUnavailable):  # the object store is down: the client may retry
        return FhirError(503, "The blob store (DICOM instances, export files) is unavailable; try again later",
                         "transient", headers={"Retry-After": "5"})
    if is_cancelled(exc):
        return FhirError(503, "The request took longer than this server's time budget and was cancelled; "
                         "narrow the search or split the batch", "too-costly", headers={"Retry-After": "5"})
    return None


class BundleBudget:
    """How much one batch or transaction may ask for: entries, and time for all of them.

    Each entry is bounded on its own (statement budget); without a bound on the whole, a
    10,000-entry batch kept a worker busy for minutes after its client had given up. Entries
    of a batch past the deadline answer 503 each; a transaction past it rolls back whole.
    """

    def __init__(self, max_entries: int = 10_000, seconds: float = 0.0) -> None:
        self.max_entries = max_entries
        self.deadline = time.monotonic() + seconds if seconds > 0 else None
        self.seconds = seconds

    def check_entries(self, n: int) -> None:
        if n > self.max_entries:
            raise FhirError(413, f"A Bundle takes at most {self.max_entries} entries ({n} sent); "
                            "split it", "too-costly")

    def check_time(self, index: int) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FhirError(503, f"Bundle.entry[{index}] was not run: the Bundle took longer than "
                            f"{self.seconds:g} s; send the rest again", "too-costly",
                            headers={"Retry-After": "5"})
