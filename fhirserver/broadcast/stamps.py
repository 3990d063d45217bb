"""The shared stamps: one counter row per channel, bumped in the writer's own transaction.

Why a counter row and not only a notification: a notification can be missed (a listener that was
disconnected, a process that started later), a committed row cannot. Every reader compares the
stamp it cached a value under with the row's (or the listener's copy of it); a change means
"read again". The row is bumped in the same transaction as the change it announces, so a reader
can never see the new stamp before the change, and the row lock orders concurrent publishers.
On PostgreSQL the same transaction queues a NOTIFY, delivered to every listener at commit.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, String, Table, func, select
from sqlalchemy.engine import Connection, Engine

from fhirserver.storage import metadata, reading

PG_CHANNEL = "fhirserver_broadcast"  # the one LISTEN channel; the payload names the stamp

broadcast_stamp = Table(
    "broadcast_stamp", metadata,
    Column("channel", String(64), primary_key=True),
    Column("stamp", BigInteger, nullable=False),
)


def publish(where: Engine | Connection, channel: str) -> int:
    """Announce a change on `channel` to every process on this database; the new stamp.

    With a Connection the bump commits (or rolls back) with the caller's transaction: call it
    as the last statement of that transaction (the row lock is held until commit)."""
    if isinstance(where, Engine):
        with where.connect().execution_options(fhir_write=True) as conn, conn.begin():
            return publish(conn, channel)
    if where.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(broadcast_stamp).values(channel=channel, stamp=1)
    stmt = stmt.on_conflict_do_update(index_elements=[broadcast_stamp.c.channel],
                                      set_={"stamp": broadcast_stamp.c.stamp + 1})
    stamp = int(where.execute(stmt.returning(broadcast_stamp.c.stamp)).scalar_one())
    if where.dialect.name == "postgresql":
        where.execute(select(func.pg_notify(PG_CHANNEL, f"{channel}:{stamp}")))
    return stamp


def read_stamp(engine: Engine, channel: str) -> int:
    """The committed stamp of `channel` (0: never published; -1: the database did not answer,
    so nothing cached may be trusted)."""
    try:
        with reading(engine) as conn:
            val = conn.execute(select(broadcast_stamp.c.stamp)
                               .where(broadcast_stamp.c.channel == channel)).scalar()
    except Exception:  # noqa: BLE001 - any failure means "unknown", which callers treat as stale
        return -1
    return int(val or 0)


def read_all(conn: Any) -> dict[str, int]:
    """Every channel's stamp, through a DBAPI-level (psycopg) connection: the listener's."""
    rows = conn.execute("SELECT channel, stamp FROM broadcast_stamp").fetchall()
    return {str(c): int(s) for c, s in rows}


__all__ = ["PG_CHANNEL", "broadcast_stamp", "publish", "read_all", "read_stamp"]
