"""Planner statistics: ANALYZE after bulk writes, because plans are only as good as the numbers.

PostgreSQL picks join orders and index scans from per-table statistics that only ANALYZE (or
autovacuum, which deployments turn off or tune down) refreshes. Right after a bulk load the
statistics describe an empty or much smaller database and searches run on bad plans (a name
search measured 31 req/s before ANALYZE, 452 after). So bulk paths (`fhirserver load`,
`$reindex`, large Bundles) refresh them here. SQLite's planner reads `sqlite_stat1`, which its
ANALYZE fills the same way.
"""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Engine

from fhirserver.storage.tables import INDEX_TABLES, resource, resource_history

# The tables searches plan over.
SEARCH_TABLES: tuple[str, ...] = (resource.name, resource_history.name, *(t.name for t in INDEX_TABLES))
# Like autovacuum's analyze threshold: stale once this many rows plus this share changed.
STALE_ROWS = 1000
STALE_SHARE = 0.1


def analyze(engine: Engine, tables: Sequence[str] = SEARCH_TABLES) -> None:
    """Refresh the statistics of `tables` (outside any transaction: ANALYZE sees committed rows)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE " + ", ".join(tables))
        else:
            conn.exec_driver_sql("ANALYZE")


def stale_tables(engine: Engine, unreported: int = 0) -> list[str]:
    """Search tables whose rows changed enough since their last ANALYZE (PostgreSQL; [] elsewhere).

    `unreported`: rows the caller wrote that the counters may not show yet. A backend reports
    its counts to the statistics system at most once a second (PostgreSQL 15), so a quick run of
    bulk Bundles would otherwise look fresh until long after it ended."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:names) "
            "AND n_mod_since_analyze + :unreported > :rows + :share * GREATEST(n_live_tup, 0)"),
            {"names": list(SEARCH_TABLES), "rows": STALE_ROWS, "share": STALE_SHARE,
             "unreported": unreported}).scalars().all()
    return list(rows)


def analyze_if_stale(engine: Engine, unreported: int = 0) -> list[str]:
    """ANALYZE the search tables that went stale; returns their names."""
    stale = stale_tables(engine, unreported)
    if stale:
        analyze(engine, stale)
    return stale


__all__ = ["SEARCH_TABLES", "analyze", "analyze_if_stale", "stale_tables"]
