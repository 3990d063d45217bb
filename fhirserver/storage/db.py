"""Engine creation: the same behaviour on the embedded SQLite and on PostgreSQL."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from fhirserver.storage.conflicts import refuse_write_in_read


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine whose write transactions serialize on SQLite (BEGIN IMMEDIATE) as they do on PG."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DBAPI objects
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            write = conn.get_execution_options().get("fhir_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        @event.listens_for(engine, "before_cursor_execute")
        def _upgrade(conn, _cursor, statement, _params, context, _many):  # noqa: ANN001
            # A deferred (read) transaction cannot take the write lock once another connection
            # has committed: stop before the write so that `conflicts.run` restarts as a writer.
            refuse_write_in_read(conn, statement, context)

        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # No pre-ping (a round trip per checkout): stale connections are recycled instead, and a
    # request that meets a dropped connection fails once with a clean 500 OperationOutcome.
    # A bounded connect: an unreachable database fails a request (and /readyz) in seconds, not minutes.
    connect_args = {} if "connect_timeout" in url else {"connect_timeout": 10}
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                         connect_args=connect_args)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
