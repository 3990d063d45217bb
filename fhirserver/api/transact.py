"""The database transaction of one interaction: started in the mode its work needs, run again
after a transient conflict, answered 409 (never 500) when the conflict remains.

Whether an interaction writes follows from what it does, not from its HTTP method: `POST _search`
and read-only operations such as `$everything` read, while `GET $access-log`, `GET
$find-by-email` and `GET $reindex` write (an AuditEvent, index rows). Operations declare that
they write (`fhirserver.operations.WRITING`), so on SQLite those start `BEGIN IMMEDIATE` and never
meet "database is locked" when upgrading; anything undeclared that writes anyway is restarted as a
writer by `fhirserver.storage.conflicts`.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

from fhirserver.api.interactions import WRITE_METHODS, FhirRequest
from fhirserver.api.outcome import FhirError
from fhirserver.storage import Repository, TransactionConflict, Tx, run_transaction

T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def writing_operations() -> frozenset[str]:
    """`$operations` that write whatever method they are called with."""
    from fhirserver import operations

    return frozenset({"$reindex", *operations.WRITING})


def writes(req: FhirRequest) -> bool:
    """Whether the interaction will write (the transaction then starts as a writer)."""
    op = req.operation
    if op and op.startswith("$"):
        return op in writing_operations()
    if op == "_search":
        return False
    return req.method in WRITE_METHODS


def run(repo: Repository, work: Callable[[Tx], T], *, write: bool, single_read: bool = False) -> T:
    """`work(tx)` in one committed transaction; a conflict that outlives the retries is a 409."""
    try:
        return run_transaction(repo, work, write=write, single_read=single_read)
    except TransactionConflict as exc:
        raise FhirError(409, str(exc), "transient", headers={"Retry-After": "1"}) from None


__all__ = ["run", "writes", "writing_operations"]
