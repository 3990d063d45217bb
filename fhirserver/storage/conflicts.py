"""Running one unit of work in a transaction that survives lock conflicts.

Two kinds of failure are not the client's fault and go away when the work runs again:

- PostgreSQL aborts one of two transactions that wait on each other (deadlock, 40P01) or that
  cannot be serialized (40001), and a lock wait can time out (55P03);
- SQLite refuses a read transaction's first write once another connection has committed since it
  began (SQLITE_BUSY_SNAPSHOT, "database is locked"): a deferred transaction cannot be upgraded.

`run` starts the work in the mode the caller expects (write or read), retries a bounded number of
times on those failures, and raises `TransactionConflict` (a 409 for the client) when the
conflict remains. A read transaction on SQLite is "upgradable": its first write statement raises
`WriteRequired` before it reaches the database, and the work starts over in a write transaction
(`BEGIN IMMEDIATE`). So whether a transaction writes follows from what it does; the caller's
hint only saves that restart.
"""
from __future__ import annotations

import random
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from sqlalchemy.exc import DBAPIError

from fhirserver.storage.repository import StorageError

if TYPE_CHECKING:
    from fhirserver.storage.repository import Repository, Tx

T = TypeVar("T")
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
ATTEMPTS = 5
BUDGET_SECONDS = 20.0  # no new attempt after this long: the client is better told 409


class TransactionConflict(StorageError):
    """The transaction kept meeting concurrent ones (deadlock, serialization, busy database)."""


class WriteRequired(StorageError):
    """A read transaction on SQLite tried to write; it must start over as a write transaction."""


def is_transient(exc: BaseException) -> bool:
    """Whether the database error goes away if the whole transaction runs again."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        name = getattr(orig, "sqlite_errorname", "") or ""
        return name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in str(orig)
    return False


def run(repo: "Repository", work: Callable[["Tx"], T], *, write: bool, single_read: bool = False,
        attempts: int = ATTEMPTS) -> T:
    """`work(tx)` in one transaction, committed; run again (from scratch) after a transient
    conflict. `work` must be safe to repeat: everything it does goes through `tx`."""
    started = time.monotonic()
    failures = 0
    while True:
        try:
            with repo.transaction(write=write, single_read=single_read and write is False) as tx:
                if not write and not repo.postgres:
                    tx.conn.execution_options(fhir_upgradable=True)
                return work(tx)
        except WriteRequired:
            write = True  # not a failure: the same work, now holding the write lock from the start
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            failures += 1
            if failures >= attempts or time.monotonic() - started > BUDGET_SECONDS:
                raise TransactionConflict(
                    "The transaction conflicted with concurrent ones and was not applied; "
                    "send it again") from exc
            time.sleep(random.uniform(0, 0.02 * 2 ** failures))  # jitter: the losers do not collide again


def refuse_write_in_read(conn: Any, statement: str, context: Any) -> None:
    """Raise `WriteRequired` for a write statement on an upgradable (read) SQLite transaction."""
    if not conn.get_execution_options().get("fhir_upgradable") or conn.get_execution_options().get("fhir_write"):
        return
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        raise WriteRequired("a read transaction tried to write")
    head = statement.lstrip()[:7].upper()
    if head.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
        raise WriteRequired("a read transaction tried to write")


__all__ = ["TransactionConflict", "WriteRequired", "is_transient", "refuse_write_in_read", "run"]
