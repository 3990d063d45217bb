"""Rate limits by client address on the login and token endpoints (beside per-account lockout).

Failures are rows in the database, so every worker and every machine behind one database
counts the same attempts. Past `LIMIT` failures from one address within `WINDOW` seconds, the
address gets 429 with Retry-After until the window has passed.
"""
from __future__ import annotations

import time

from sqlalchemy import BigInteger, Column, Index, String, Table, delete, func, insert, select
from sqlalchemy.engine import Engine

from fhirserver.storage import PK, metadata

LIMIT = 20
WINDOW = 600

auth_failure = Table(
    "auth_failure", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("address", String(64), nullable=False),
    Column("endpoint", String(20), nullable=False),
    Column("at", BigInteger, nullable=False),
    Index("ix_auth_failure_address", "address", "at"),
)


def blocked_for(engine: Engine, address: str | None) -> int:
    """Seconds until this address may try again (0: not blocked)."""
    if not address:
        return 0
    since = int(time.time()) - WINDOW
    with engine.connect() as conn:
        n, first = conn.execute(select(func.count(), func.min(auth_failure.c.at)).where(
            auth_failure.c.address == address, auth_failure.c.at > since)).one()
    if n < LIMIT:
        return 0
    return max(1, int(first) + WINDOW - int(time.time()))


def record_failure(engine: Engine, address: str | None, endpoint: str) -> None:
    if not address:
        return
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(insert(auth_failure).values(address=address[:64], endpoint=endpoint, at=now))
        conn.execute(delete(auth_failure).where(auth_failure.c.at < now - 2 * WINDOW))
