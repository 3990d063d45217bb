"""The `job` table: one row per unit of background work, on the core MetaData."""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, text

from fhirserver.storage import PK, metadata

# Times are epoch milliseconds (BigInteger): the same comparison on SQLite and PostgreSQL, no
# time zone to lose on the way.
job = Table(
    "job", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("kind", String(100), nullable=False),
    Column("payload", Text, nullable=False),            # JSON given to the handler
    Column("actor", Text, nullable=False),              # JSON: {"system": name} or {"principal": {...}}
    Column("state", String(16), nullable=False),        # queued | running | done | failed | cancelled
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", BigInteger, nullable=False),       # not before this
    Column("lease_until", BigInteger, nullable=True),   # a running job whose lease passed is re-run
    Column("worker", String(200), nullable=True),       # who holds the lease
    Column("dedupe_key", String(300), nullable=True),
    Column("cancel_requested", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("finished", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_job_due", "state", "run_at"),
    Index("ix_job_kind", "kind", "state"),
    # at most one *waiting* job per key: a cause arriving while one waits is already covered,
    # one arriving while it runs gets a new job (the running one may have read older data)
    Index("ux_job_dedupe_queued", "dedupe_key", unique=True,
          sqlite_where=text("state = 'queued'"), postgresql_where=text("state = 'queued'")),
)

JOB_TABLES = (job,)
