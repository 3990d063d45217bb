"""The database transaction of one interaction: started in the mode its work needs, run again
after a transient conflict, answered 409 (never 500) when the conflict remains.

Whether an interaction writes follows from what it does, not from its HTTP method: `POST _search`
and read-only operations such as `$everything` read, while `GET $access-log`, `GET
$find-by-email` and `GET $reindex` write (an AuditEvent, index rows). Operations declare that
they write (`OperationRegistry.writing`), so on SQLite those start `BEGIN IMMEDIATE` and never
meet "database is locked" when upgrading; anything undeclared that writes anyway is restarted as a
writer by `fhirserver.storage.conflicts`.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from fhirserver.errors import FhirError
from fhirserver.interactions.context import WRITE_METHODS, FhirRequest, OperationRegistry
from fhirserver.storage import Repository, TransactionConflict, Tx, run_transaction

T = TypeVar("T")


def writes(req: FhirRequest, operations: OperationRegistry | None = None) -> bool:
    """Whether the interaction will write (the transaction then starts as a writer).

    An `$operation` writes when the registry says so; without a registry, it is assumed to."""
    op = req.operation
    if op and op.startswith("$"):
        return operations.writes(op) if operations is not None else True
    if op == "_search":
        return False
    return req.method in WRITE_METHODS


def run(repo: Repository, work: Callable[[Tx], T], *, write: bool, single_read: bool = False) -> T:
    """`work(tx)` in one committed transaction; a conflict that outlives the retries is a 409."""
    try:
        return run_transaction(repo, work, write=write, single_read=single_read)
    except TransactionConflict as exc:
        raise FhirError(409, str(exc), "transient", headers={"Retry-After": "1"}) from None


__all__ = ["run", "writes"]
