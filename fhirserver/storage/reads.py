"""Reads by id at the driver's speed: one prepared statement on a pooled DBAPI connection.

`Repository.transaction` costs a SQLAlchemy Connection, isolation-level switches and statement
compilation per call; a read by id needs none of it. `ReadStatements` compiles each statement
shape (current row or one version, with the caller's access conditions) to driver SQL once and
keeps it; a read is then a pool checkout, one execute (prepared by psycopg after a few uses on a
connection) and a checkin. On PostgreSQL the statement runs in autocommit (a single SELECT needs
no BEGIN/COMMIT); on SQLite the connection is already in autocommit (we emit BEGIN ourselves).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Hashable, Sequence

from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.storage.repository import _CURRENT_COLS, _HISTORY_COLS, Stored, _utc
from fhirserver.storage.tables import resource, resource_history

_MAX_SHAPES = 2048  # compiled statements kept (one per access filter and resource type)


class _Compiled:
    """Driver SQL and how to bind it (named for psycopg, positional for sqlite3). The access
    conditions' own values (IN lists expanded) are fixed at compile time; t, i, v are the
    per-read values, given placeholders here so that the statement compiles without them."""

    __slots__ = ("sql", "fixed", "order")

    def __init__(self, stmt: Any, engine: Engine) -> None:
        c = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        self.sql = c.string
        params = c.construct_params()
        self.order: tuple[str, ...] | None = tuple(c.positiontup) if c.positional else None
        self.fixed = {k: v for k, v in params.items() if k not in ("t", "i", "v")}

    def bind(self, values: dict[str, Any]) -> Any:
        if self.order is None:
            return {**self.fixed, **values}
        merged = {**self.fixed, **values}
        return tuple(merged[k] for k in self.order)


class ReadStatements:
    """Reads of one resource (current or a version) with access conditions, by the driver."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._shapes: "OrderedDict[Hashable, _Compiled]" = OrderedDict()
        self._lock = threading.Lock()

    def _compiled(self, key: Hashable, build: Any) -> _Compiled:
        got = self._shapes.get(key)
        if got is not None:
            return got
        got = _Compiled(build(), self.engine)
        with self._lock:
            self._shapes[key] = got
            if len(self._shapes) > _MAX_SHAPES:
                self._shapes.popitem(last=False)
        return got

    def _fetch(self, compiled: _Compiled, values: dict[str, Any]) -> tuple | None:
        return self._run(compiled, values, one=True)

    def rows(self, key: Hashable, build: Any, values: dict[str, Any]) -> list[tuple]:
        """Every row of the SELECT `build()` (compiled once per `key`, which must name the
        statement's shape and any values fixed in it) with the per-call bind `values`, at the
        driver's speed. Its bind parameters need default values (e.g. `bindparam("x", "")`)."""
        return self._run(self._compiled(key, build), values, one=False)

    def _run(self, compiled: _Compiled, values: dict[str, Any], one: bool) -> Any:
        raw = self.engine.raw_connection()
        try:
            driver = raw.driver_connection
            if self.postgres:
                driver.autocommit = True  # one SELECT: no BEGIN / COMMIT round trips
                try:
                    cur = driver.execute(compiled.sql, compiled.bind(values))
                    return cur.fetchone() if one else cur.fetchall()
                finally:
                    driver.autocommit = False  # the pool hands it out in its usual mode
            deadline = raw.info.get("fhir_deadline")  # SQLite's statement budget (storage.budget)
            if deadline is not None:
                deadline[0] = time.monotonic() + raw.info["fhir_budget"]
            cur = raw.cursor()
            try:
                cur.execute(compiled.sql, compiled.bind(values))
                return cur.fetchone() if one else cur.fetchall()
            finally:
                cur.close()
        finally:
            raw.close()

    def current(self, res_type: str, res_id: str, where: Sequence[ColumnElement[bool]] = (),
                key: Hashable = None) -> Stored | None:
        """The current row (deleted or not) if `where` lets the caller see it.

        `key` names the access conditions (equal keys must mean equal conditions); None means
        there are none."""
        compiled = self._compiled(("current", res_type, key), lambda: select(*_CURRENT_COLS).where(
            resource.c.res_type == bindparam("t", ""), resource.c.res_id == bindparam("i", ""), *where))
        row = self._fetch(compiled, {"t": res_type, "i": res_id})
        return _stored(row) if row else None

    def version(self, res_type: str, res_id: str, version_id: int, where: Sequence[ColumnElement[bool]] = (),
                key: Hashable = None) -> Stored | None:
        """One version if it exists and the current row passes `where` (the audience of a
        resource's history is the audience of its current row)."""
        h = resource_history

        def build() -> Any:
            visible = exists(select(resource.c.pk).where(
                resource.c.res_type == bindparam("t", ""), resource.c.res_id == bindparam("i", ""), *where))
            return select(*_HISTORY_COLS).where(h.c.res_type == bindparam("t", ""), h.c.res_id == bindparam("i", ""),
                                                h.c.version_id == bindparam("v", 0), visible)

        compiled = self._compiled(("version", res_type, key), build)
        row = self._fetch(compiled, {"t": res_type, "i": res_id, "v": version_id})
        return _stored(row) if row else None


def _stored(row: tuple) -> Stored:
    pk, res_type, res_id, version_id, last_updated, deleted, body = row[:7]
    method = row[7] if len(row) > 7 else ""
    if isinstance(last_updated, str):  # sqlite3 hands back the stored text
        from datetime import datetime

        last_updated = datetime.fromisoformat(last_updated)
    return Stored(pk, res_type, res_id, version_id, _utc(last_updated), bool(deleted), body, method or "")


__all__ = ["ReadStatements"]
