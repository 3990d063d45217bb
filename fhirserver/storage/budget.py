"""A time budget for every database statement the server runs for a request.

A search the planner gets wrong, or a client asking for a pathological one, must not keep a
worker (and its connection) busy for minutes after the client gave up. PostgreSQL cancels
the statement itself (`statement_timeout`, set once per connection); SQLite has no such
setting, so a progress handler, called every few thousand virtual-machine steps, interrupts
the statement once its deadline is passed. Either way the driver raises, the transaction
rolls back, and the API answers 503 (see `is_cancelled`).
"""
from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_STEPS = 20_000  # SQLite VM instructions between deadline checks (microseconds apart)


def install_budget(engine: Engine, seconds: float) -> None:
    """Cancel any statement of `engine` that runs longer than `seconds` (0: no budget)."""
    if seconds <= 0:
        return
    if engine.dialect.name == "postgresql":
        millis = max(1, int(seconds * 1000))

        @event.listens_for(engine, "connect")
        def _pg_timeout(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {millis}")
            dbapi_conn.commit()
        return

    @event.listens_for(engine, "connect")
    def _sqlite_handler(dbapi_conn: Any, record: Any) -> None:
        deadline = [float("inf")]
        record.info["fhir_deadline"] = deadline
        record.info["fhir_budget"] = seconds  # for statements run on the DBAPI connection itself
        dbapi_conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline[0] else 0, _STEPS)

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, _cursor: Any, _stmt: Any, _params: Any, _context: Any, _many: Any) -> None:
        deadline = conn.connection.info.get("fhir_deadline")
        if deadline is not None:
            deadline[0] = time.monotonic() + seconds


def is_cancelled(exc: BaseException) -> bool:
    """True when `exc` is a statement cancelled by its time budget (on either database)."""
    orig = getattr(exc, "orig", exc)
    if type(orig).__name__ == "QueryCanceled":  # psycopg.errors.QueryCanceled (SQLSTATE 57014)
        return True
    return isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig)
