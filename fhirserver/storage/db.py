"""Engine creation: the same behaviour on the embedded SQLite and on PostgreSQL."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

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
    # LIFO: the connection used last is handed out next, so a quiet worker keeps reusing one or
    # two backends whose prepared statements and catalog caches are warm (FIFO rotates through
    # all ten, and each must see a statement five times before psycopg prepares it)
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                         pool_use_lifo=True, connect_args=connect_args)


def reading(engine: Engine) -> Connection:
    """A connection for reads outside any transaction of the caller's: on PostgreSQL in
    autocommit mode, so a poll or a lookup costs one round trip and ends without a ROLLBACK
    (psycopg drops every prepared statement of a connection at each rollback, and the next
    request on that pooled connection would plan its statements again). Use as `with
    reading(engine) as conn:`; a write through it commits at once on PostgreSQL."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def ping(engine: Engine) -> None:
    """One round trip to the database (raises when it does not answer). A pooled connection
    the database dropped while it was away is retried once on a fresh one: after an outage the
    first probe reports the database as it is now, not the pool's stale socket."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1")).scalar_one()
            return
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise


def readable_tables(engine: Engine, names: tuple[str, ...]) -> list[str]:
    """Which of these tables exist, each read once (raises when one cannot be read)."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        present = [t for t in names if t in set(inspect(conn).get_table_names())]
        for table in present:
            conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).all()  # names are the caller's constants
    return present
