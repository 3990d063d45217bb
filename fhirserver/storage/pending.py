"""History and index rows of one transaction, held back and written together.

A write's history row and its ~40 index rows are only read by searches and history, which flush
first. So is, on PostgreSQL, the `resource` row of a create under a server-made id: its pk (which
keys everything else) is drawn ahead from the sequence, and the transaction's connection writes
held rows before any statement it sends (`Tx.conn`). Held back, the rows
of a whole transaction Bundle go to the database together: on PostgreSQL in ONE statement
(data-modifying CTEs reading the rows of every table from one JSON parameter serialised by
orjson), elsewhere in one executemany per table. An update that replaces a resource's index rows
deletes the old ones in that same statement (the deletes see the rows as they were before it, so
they never touch the rows it inserts) and drops any rows still held for that resource.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from fhirserver.model import dumps
from fhirserver.storage.tables import (
    idx_date, idx_number, idx_quantity, idx_reference, idx_string, idx_text, idx_token, idx_uri,
    resource, resource_compartment, resource_history,
)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string, "token": idx_token, "reference": idx_reference, "date": idx_date,
    "number": idx_number, "quantity": idx_quantity, "uri": idx_uri, "text": idx_text,
    "compartment": resource_compartment}
# A deletion keeps the compartment rows: the deleted versions still belong to their patients, so
# history and vread keep the audience they had (deleted data never becomes "unassigned").
KEPT_ON_DELETE = frozenset({"compartment"})
_HISTORY_COLUMNS = ("res_type", "res_id", "version_id", "last_updated", "method", "deleted", "body")

# A statement shape: which tables get rows, and which deletes run.
Shape = tuple[tuple[str, ...], bool, bool]


class PendingWrites:
    """The held-back rows of one transaction (see the module docstring)."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []  # new `resource` rows, pk drawn (Tx.create)
        self.history: list[dict[str, Any]] = []
        self.index: dict[int, tuple[str, dict[str, list[dict[str, Any]]]]] = {}  # pk -> (type, rows)
        self.stale: dict[int, bool] = {}  # pk -> True when its compartment rows stay

    def __bool__(self) -> bool:
        return bool(self.resources or self.history or self.index or self.stale)

    def add_resource(self, row: dict[str, Any]) -> None:
        self.resources.append(row)

    def add_history(self, row: dict[str, Any]) -> None:
        self.history.append(row)

    def set_index(self, pk: int, res_type: str, rows: dict[str, list[dict[str, Any]]]) -> None:
        """The index rows of `pk` (replacing any still held for it)."""
        self.index[pk] = (res_type, rows)

    def unindex(self, pk: int, keep_compartments: bool = False) -> None:
        """Remove `pk`'s index rows: those in the database at the next write, those held now."""
        self.stale[pk] = self.stale.get(pk, True) and keep_compartments
        held = self.index.get(pk)
        if held is not None:
            if keep_compartments:
                self.index[pk] = (held[0], {k: v for k, v in held[1].items() if k in KEPT_ON_DELETE})
            else:
                del self.index[pk]

    def _rows(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for pk, (res_type, tables) in self.index.items():
            for name, rows in tables.items():
                if not rows:
                    continue
                into = out.setdefault(name, [])
                for row in rows:
                    row["res_pk"] = pk
                    if name != "compartment":
                        row["res_type"] = res_type
                    into.append(row)
        return out

    def write(self, conn: Connection, postgres: bool, statements: dict[Shape, str]) -> None:
        """Send everything held to the database and forget it."""
        rows = self._rows()
        full = [pk for pk, keep in self.stale.items() if not keep]
        kept = [pk for pk, keep in self.stale.items() if keep]
        history, resources = self.history, self.resources
        self.history, self.index, self.stale, self.resources = [], {}, {}, []
        if postgres:
            held = {"resource": resources, "history": history}
            names = tuple(n for n in ("resource", "history", *INDEX_TABLES) if held.get(n) or rows.get(n))
            shape: Shape = (names, bool(full), bool(kept))
            sql = statements.get(shape)
            if sql is None:
                sql = statements[shape] = _pg_statement(shape)
            if history:
                rows["history"] = history
            if resources:
                rows["resource"] = resources
            texts = [row["res_pk"] for row in rows.get("text", ())]
            conn.exec_driver_sql(sql, {"rows": dumps(rows).decode(), "full": full, "kept": kept, "texts": texts})
            return
        if resources:
            conn.execute(insert(resource), resources)
        for name, table in INDEX_TABLES.items():
            gone = full + ([] if name in KEPT_ON_DELETE else kept)
            if gone:
                conn.execute(delete(table).where(table.c.res_pk.in_(gone)))
        if history:
            conn.execute(insert(resource_history), history)
        for name, table_rows in rows.items():
            conn.execute(insert(INDEX_TABLES[name]), table_rows)


def _columns(table: Table) -> list[tuple[str, str]]:
    """(name, PostgreSQL type) of the columns a write fills (the history's own pk excluded; a
    resource row's pk is drawn ahead, so it is filled)."""
    dialect = postgresql.dialect()
    out = []
    for col in table.columns:
        if table is resource_history and col.name not in _HISTORY_COLUMNS:
            continue
        sql_type = "TEXT" if col.name == "body" else col.type.compile(dialect=dialect)
        out.append((col.name, sql_type))
    return out


# The CTEs of one statement run in no set order, and a unique index sees a row another CTE
# deletes as still there: idx_text (keyed by res_pk) overwrites instead of delete + insert.
_TEXT_UPSERT = (" ON CONFLICT (res_pk) DO UPDATE SET res_type = EXCLUDED.res_type, "
                "narrative = EXCLUDED.narrative, content = EXCLUDED.content")


def _pg_statement(shape: Shape) -> str:
    """One statement for one shape: deletes, then every table's rows from the JSON parameter."""
    names, full, kept = shape
    parts = []
    for name, table in INDEX_TABLES.items():
        conds = []
        if full:
            conds.append("res_pk = ANY(%(full)s)")
        if kept and name not in KEPT_ON_DELETE:
            conds.append("res_pk = ANY(%(kept)s)")
        if conds:
            where = " OR ".join(conds)
            if name == "text":  # one row per resource: a replaced row is overwritten (see below)
                where = f"({where}) AND res_pk <> ALL(%(texts)s)"
            parts.append(f"d_{name} AS (DELETE FROM {table.name} WHERE {where})")
    for name in names:
        table = resource if name == "resource" else resource_history if name == "history" else INDEX_TABLES[name]
        cols = _columns(table)
        select = ", ".join("CAST(x.body AS JSON)" if c == "body" else f"x.{c}" for c, _t in cols)
        record = ", ".join(f"{c} {t}" for c, t in cols)
        parts.append(f"i_{name} AS (INSERT INTO {table.name} ({', '.join(c for c, _t in cols)}) "
                     f"SELECT {select} FROM jsonb_to_recordset((SELECT d FROM j) -> '{name}') "
                     f"AS x({record})"
                     + (_TEXT_UPSERT if name == "text" else "") + ")")
    if names:  # the parameter is parsed once (a CTE used more than once is materialised)
        parts.insert(0, "j AS (SELECT CAST(%(rows)s AS JSONB) AS d)")
    return "WITH " + ", ".join(parts) + " SELECT 1" if parts else "SELECT 1"


__all__ = ["INDEX_TABLES", "PendingWrites"]
