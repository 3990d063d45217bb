"""Version 1 of many new resources whose stamped body text and index rows the caller built.

Why: the audit writer turns every authenticated read into an AuditEvent, so its batches are the
largest steady write stream of a busy server. On PostgreSQL they go in by COPY, the cheapest
way in for the database: the pks are drawn from the `resource` sequence in one call (no
RETURNING, rows keyed before they are sent), then one COPY per table (`resource`,
`resource_history`, each index table). No SQL to plan per batch and no JSON parameter for the
server to parse, as the buffered path (storage.pending) needs. Elsewhere (SQLite) the rows take
the usual path: one multi-row INSERT, history and index rows buffered.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from sqlalchemy.engine import Connection

from fhirserver.storage.pending import INDEX_TABLES

# (res_id, stamped JSON text, index rows {"token": [...], ...} as the indexer returns them)
Built = tuple[str, str, dict[str, list[dict[str, Any]]]]

_RESOURCE_COPY = "COPY resource (pk, res_type, res_id, version_id, last_updated, deleted, body) FROM STDIN"
_HISTORY_COPY = ("COPY resource_history (res_type, res_id, version_id, last_updated, method, deleted, body) "
                 "FROM STDIN")
_PKS = "SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, %s)"
# each index table's columns in COPY order, those the caller's rows fill after the two keys
_INDEX_COLUMNS = {name: tuple(c.name for c in table.columns if c.name not in ("res_pk", "res_type"))
                  for name, table in INDEX_TABLES.items()}


def draw_pks(conn: Connection, n: int) -> list[int]:
    """`n` new storage keys from the `resource` sequence (PostgreSQL), in one round trip."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        return [row[0] for row in cur.execute(_PKS, (n,)).fetchall()]


def copy_new(conn: Connection, res_type: str, when: datetime, items: Sequence[Built]) -> list[int]:
    """Write the rows of `items` by COPY (PostgreSQL) in the connection's transaction; their pks."""
    pks = draw_pks(conn, len(items))
    raw = conn.connection.driver_connection  # the psycopg connection, in this transaction
    with raw.cursor() as cur:
        with cur.copy(_RESOURCE_COPY) as copy:
            for pk, (rid, text, _rows) in zip(pks, items):
                copy.write_row((pk, res_type, rid, 1, when, False, text))
        with cur.copy(_HISTORY_COPY) as copy:
            for rid, text, _rows in items:
                copy.write_row((res_type, rid, 1, when, "POST", False, text))
        for name, table in INDEX_TABLES.items():
            cols = _INDEX_COLUMNS[name]
            typed = name != "compartment"  # compartment rows carry no res_type
            out = [(pk, res_type, *map(row.get, cols)) if typed else (pk, *map(row.get, cols))
                   for pk, (_rid, _text, rows) in zip(pks, items) for row in rows.get(name) or ()]
            if not out:
                continue
            head = ("res_pk", "res_type", *cols) if typed else ("res_pk", *cols)
            with cur.copy(f"COPY {table.name} ({', '.join(head)}) FROM STDIN") as copy:
                for values in out:
                    copy.write_row(values)
    return pks


__all__ = ["Built", "copy_new", "draw_pks"]
