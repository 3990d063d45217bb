"""Committed Bundle batch ids: a Bundle (or one batch entry) carrying one is applied at most once.

Why: a client that loses the answer to a transaction (killed, timed out, connection dropped) cannot
tell whether the server committed it, and sending it again would write everything twice. A Bundle
with `identifier.system = BATCH_ID_SYSTEM` has its value recorded here *in the same database
transaction* as its entries, so the record exists exactly when the data does. Sending it again is
the question "did it commit?": the insert finds the key and the Bundle is not applied again.

The primary key makes this exact under concurrency too: on PostgreSQL a second transaction with the
same key waits on the first one's uncommitted row and then sees the conflict (or proceeds if the
first rolled back); SQLite serializes writers.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, String, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhirserver.storage.repository import Tx, now_utc
from fhirserver.storage.tables import metadata

BATCH_ID_SYSTEM = "urn:fhirserver:load-batch"

committed_batch = Table(
    "committed_batch", metadata,
    # "<id>" for a transaction, "<id>#<entry index>" for one entry of a batch Bundle
    Column("batch_key", String(200), primary_key=True),
    Column("committed_at", DateTime(timezone=True), nullable=False),
)

BATCH_TABLES = (committed_batch,)
MAX_KEY = 200


def claim(tx: Tx, key: str) -> datetime | None:
    """Record `key` in this transaction; None if it is new, else when it was committed before."""
    values = {"batch_key": key, "committed_at": now_utc()}
    stmt = (pg_insert if tx.postgres else sqlite_insert)(committed_batch).values(**values)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT
    stmt = stmt.on_conflict_do_nothing(index_elements=["batch_key"]).returning(committed_batch.c.batch_key)
    if tx.conn.execute(stmt).first() is not None:
        return None
    return tx.conn.execute(select(committed_batch.c.committed_at)
                           .where(committed_batch.c.batch_key == key)).scalar_one()


__all__ = ["BATCH_ID_SYSTEM", "BATCH_TABLES", "MAX_KEY", "claim", "committed_batch"]
