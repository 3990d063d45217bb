"""The repository: versioned create/read/update/delete/history over the two resource tables.

Every write happens inside a `Tx`; a transaction Bundle is one `Tx`, so it commits or rolls back
whole. Versions of one resource serialize on the row lock (`SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite), so concurrent updates never lose one.
"""
from __future__ import annotations

import dataclasses
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import and_, bindparam, case, exists, func, insert, literal, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.model import dumps, loads
from fhirserver.storage import locks, statistics
from fhirserver.storage.bulk import Built, copy_new, draw_pks
from fhirserver.storage.pending import INDEX_TABLES, PendingWrites, Shape
from fhirserver.storage.tables import resource, resource_compartment, resource_history

# Index rows come from the search package (injected into the Repository, so storage does not
# depend on search): {"string": [...], "token": [...], ..., "text": [...], "compartment": [...]}.
Indexer = Callable[[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]
# Called inside the transaction after each version is written, with the previous version's JSON
# text (None for a create or over a deletion): work that must commit or roll back with the write
# (the subscriptions' outbox). Injected like the indexer, so storage depends on nothing above it.
WriteHook = Callable[["Tx", "Stored", "str | None"], None]
_INSERT_RESOURCE = insert(resource).returning(resource.c.pk)
_UPDATE_RESOURCE = update(resource).where(resource.c.pk == bindparam("pk_")).values(
    version_id=bindparam("version_id"), last_updated=bindparam("last_updated"),
    deleted=bindparam("deleted"), body=bindparam("body"))
_PK_BLOCK_MAX = 256  # storage keys drawn ahead at most (PostgreSQL: see Tx.create)
# several rows in one statement (SQLAlchemy's insertmanyvalues), pks in the order of the rows
_INSERT_RESOURCE_MANY = insert(resource).returning(resource.c.pk, sort_by_parameter_order=True)


class StorageError(Exception):
    """Base of the errors a caller can cause."""


class VersionConflict(StorageError):
    """If-Match named a version that is not the current one."""

    def __init__(self, expected: int, actual: int | None) -> None:
        super().__init__(f"Version {expected} was expected but the current version is {actual}")
        self.expected, self.actual = expected, actual


@dataclasses.dataclass(frozen=True)
class Stored:
    """One stored version of a resource; `body` is its JSON text (None for a deletion)."""

    pk: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: str | None
    method: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


def now_utc() -> datetime:
    """Current time in UTC, truncated to milliseconds so meta.lastUpdated and the row agree."""
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def format_instant(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


def stamp(resource_json: dict[str, Any], res_id: str, version_id: int, when: datetime) -> dict:
    """Return the resource with server-owned id and meta.versionId/lastUpdated, id and meta first."""
    meta = dict(resource_json.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(when)
    out: dict[str, Any] = {"resourceType": resource_json["resourceType"], "id": res_id, "meta": meta}
    for key, value in resource_json.items():
        if key not in out:
            out[key] = value
    return out


_CURRENT_COLS = (resource.c.pk, resource.c.res_type, resource.c.res_id, resource.c.version_id,
                 resource.c.last_updated, resource.c.deleted, resource.c.body)
_HISTORY_COLS = (resource_history.c.pk, resource_history.c.res_type, resource_history.c.res_id,
                 resource_history.c.version_id, resource_history.c.last_updated,
                 resource_history.c.deleted, resource_history.c.body, resource_history.c.method)


_SELECT_CURRENT = select(*_CURRENT_COLS).where(resource.c.res_type == bindparam("t"),
                                               resource.c.res_id == bindparam("i"))
_SELECT_CURRENT_FOR_UPDATE = _SELECT_CURRENT.with_for_update()


def _row(row: Any) -> Stored:
    return Stored(row.pk, row.res_type, row.res_id, row.version_id, _utc(row.last_updated),
                  bool(row.deleted), row.body, getattr(row, "method", ""))


@contextmanager
def _own_plans(conn: Connection, postgres: bool) -> Iterator[None]:
    """Plan the statements sent inside for their own values, never by a generic plan.

    psycopg prepares a statement once it has run five times on a connection, and PostgreSQL may
    then answer it with a generic plan, made without the values. For a search the values decide
    the plan: `Patient?name=garcia12` at 100,000 patients took 0.5 ms with its own plan and 159
    ms with the generic one (a walk of every Patient in pk order), run after run, on whichever
    connection had switched. Unprepared statements are always planned with their values."""
    if not postgres:
        yield
        return
    driver = conn.connection.driver_connection
    before = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = before


class Tx:
    """Operations inside one database transaction."""

    def __init__(self, conn: Connection, postgres: bool, indexer: Indexer | None = None,
                 write_hooks: Sequence[WriteHook] = (), statements: dict[Shape, str] | None = None) -> None:
        self._conn = conn
        self.postgres = postgres
        self.indexer = indexer
        self.write_hooks = write_hooks
        self.actor: Any = None  # the access policy of whoever writes (set by the interactions)
        # History and index rows are held back and written together (storage.pending): a
        # 500-entry transaction Bundle costs ~500 + 1 round trips, not ~4,000. Anything that
        # reads those tables flushes first.
        self._pending = PendingWrites()
        self._statements: dict[Shape, str] = {} if statements is None else statements
        self.written: set[str] = set()  # resource types written: handed to Repository.after_commit
        self.on_commit: list[Callable[[], None]] = []  # this transaction's work once it committed
        self._criteria_locked: set[int] = set()  # advisory locks held (one round trip each, once)
        self._pks: list[int] = []  # storage keys drawn ahead (PostgreSQL), next one last
        self._pk_block = 1

    @property
    def conn(self) -> Connection:
        """The transaction's connection, with every held-back `resource` row written first: any
        statement sent on it (here or by a caller) sees the resources this transaction created."""
        if self._pending.resources:
            self.flush()
        return self._conn

    def flush(self) -> None:
        """Write buffered resource, history and index rows."""
        if self._pending:
            self._pending.write(self._conn, self.postgres, self._statements)

    def _new_pk(self) -> int:
        """A storage key from the `resource` sequence, drawn in growing blocks (1, 4, 16 ... 256)
        so a single create costs no extra round trip and a 500-entry Bundle about five."""
        if not self._pks:
            n = self._pk_block
            self._pk_block = min(n * 4, _PK_BLOCK_MAX)
            self._pks = draw_pks(self._conn, n)[::-1]
        return self._pks.pop()

    # -- locks (see fhirserver.storage.locks) -------------------------------------------------
    def lock_criteria(self, res_type: str, params: Sequence[tuple[str, str]]) -> None:
        """Serialize conditional writes on these criteria until the transaction ends."""
        locks.lock_criteria(self.conn, self.postgres, [(res_type, params)], self._criteria_locked)

    def lock_all_criteria(self, criteria: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        """`lock_criteria` for several, in canonical order (a transaction Bundle, up front)."""
        locks.lock_criteria(self.conn, self.postgres, criteria, self._criteria_locked)

    def lock_rows(self, keys: Sequence[tuple[str, str]]) -> None:
        """Row-lock these (type, id) in canonical order before writing them."""
        locks.lock_rows(self.conn, self.postgres, keys)

    # -- reads ---------------------------------------------------------------------------
    def current(self, res_type: str, res_id: str, for_update: bool = False,
                where: Sequence[ColumnElement[bool]] = ()) -> Stored | None:
        """The current row of a resource (deleted or not); `where` adds access conditions."""
        if not where:  # the hot path of every read and write: a statement built once
            stmt = _SELECT_CURRENT_FOR_UPDATE if for_update and self.postgres else _SELECT_CURRENT
            row = self.conn.execute(stmt, {"t": res_type, "i": res_id}).first()
            return _row(row) if row else None
        if where:
            self.flush()
        q = select(*_CURRENT_COLS).where(resource.c.res_type == res_type, resource.c.res_id == res_id, *where)
        if for_update and self.postgres:
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _row(row) if row else None

    def version(self, res_type: str, res_id: str, version_id: int) -> Stored | None:
        self.flush()
        q = select(*_HISTORY_COLS).where(
            resource_history.c.res_type == res_type, resource_history.c.res_id == res_id,
            resource_history.c.version_id == version_id)
        row = self.conn.execute(q).first()
        return _row(row) if row else None

    def by_pks(self, pks: Sequence[int]) -> list[Stored]:
        """Current rows by storage key, in the given order."""
        if not pks:
            return []
        self.flush()
        rows = {r.pk: _row(r) for r in self.conn.execute(select(*_CURRENT_COLS).where(resource.c.pk.in_(list(pks))))}
        return [rows[pk] for pk in pks if pk in rows]

    def current_where(self, where: Sequence[ColumnElement[bool]], limit: int) -> list[Stored]:
        """Current rows meeting `where` (conditions on `resource`), by storage key, at most
        `limit`: one statement where finding keys first and fetching bodies after took two."""
        self.flush()
        q = select(*_CURRENT_COLS).where(*where).order_by(resource.c.pk).limit(limit)
        with _own_plans(self._conn, self.postgres):
            return [_row(r) for r in self._conn.execute(q)]

    # -- writes --------------------------------------------------------------------------
    def create(self, res_type: str, body: dict[str, Any], res_id: str | None = None, *,
               fresh: bool = False) -> Stored:
        """Insert version 1 under a new server id (or the given id, which must be free; `fresh`:
        the caller made that id itself, a uuid4 as `new_id` makes, so no row can hold it).

        On PostgreSQL the row of a server-made id is held back with the history and index rows
        (its pk drawn ahead from the sequence) and written with them in one statement: a
        transaction Bundle's creates cost a handful of round trips instead of one each. Nothing
        can conflict with a fresh id, and every statement on `conn` writes the held rows first."""
        rid = res_id or new_id()
        when = now_utc()
        stamped = stamp(body, rid, 1, when)
        self.written.add(res_type)
        text = dumps(stamped).decode()
        row = {"res_type": res_type, "res_id": rid, "version_id": 1, "last_updated": when, "deleted": False,
               "body": text}
        if self.postgres and (res_id is None or fresh):
            pk = self._new_pk()
            self._pending.add_resource({"pk": pk, **row})
        else:
            pk = self.conn.execute(_INSERT_RESOURCE, row).scalar_one()
        self._history(res_type, rid, 1, when, "POST", text)
        self._index(pk, res_type, stamped, replace=False)
        stored = Stored(pk, res_type, rid, 1, when, False, text, "POST")
        self._hooks(stored, None)
        return stored

    def create_many(self, res_type: str, bodies: Sequence[dict[str, Any]]) -> list[Stored]:
        """`create` for many new resources under server ids, written together (`insert_built`):
        the audit writer's batch of AuditEvents costs a few statements, not one round trip per
        event."""
        if not bodies:
            return []
        when = now_utc()
        items = []
        for body in bodies:
            rid = new_id()
            stamped = stamp(body, rid, 1, when)
            rows = self.indexer(res_type, stamped) if self.indexer is not None else {}
            items.append((rid, dumps(stamped).decode(), rows))
        return self.insert_built(res_type, when, items)

    def insert_built(self, res_type: str, when: datetime, items: Sequence[Built]) -> list[Stored]:
        """Version 1 of new resources whose caller built each one's stamped JSON text (id, meta
        versionId 1 and lastUpdated `when`) and index rows (exactly what the indexer returns for
        it): a writer of one fixed, server-made shape skips the generic extraction. On
        PostgreSQL by COPY (storage.bulk), elsewhere one multi-row INSERT plus the buffered
        history and index rows. Write hooks run for each, as for `create`."""
        if not items:
            return []
        self.written.add(res_type)
        if self.postgres:
            pks = copy_new(self.conn, res_type, when, items)
        else:
            pks = list(self.conn.execute(_INSERT_RESOURCE_MANY, [
                {"res_type": res_type, "res_id": rid, "version_id": 1, "last_updated": when,
                 "deleted": False, "body": text} for rid, text, _rows in items]).scalars())
            for pk, (rid, text, rows) in zip(pks, items):
                self._history(res_type, rid, 1, when, "POST", text)
                if self.indexer is not None:
                    self._pending.set_index(pk, res_type, rows)
        out = []
        for pk, (rid, text, _rows) in zip(pks, items):
            stored = Stored(pk, res_type, rid, 1, when, False, text, "POST")
            self._hooks(stored, None)
            out.append(stored)
        return out

    def update(self, res_type: str, res_id: str, body: dict[str, Any],
               if_match: int | None = None, method: str = "PUT") -> tuple[Stored, bool]:
        """Write a new version (or version 1 under a client id). Returns (stored, created)."""
        for _attempt in range(5):
            cur = self.current(res_type, res_id, for_update=True)
            if cur is None:
                if if_match is not None:
                    raise VersionConflict(if_match, None)
                try:
                    with self.conn.begin_nested():
                        return self.create(res_type, body, res_id), True
                except IntegrityError:
                    continue  # someone created it concurrently: lock it and update instead
            if if_match is not None and if_match != cur.version_id:
                raise VersionConflict(if_match, cur.version_id)
            vid = cur.version_id + 1
            when = max(now_utc(), cur.last_updated)
            stamped = stamp(body, res_id, vid, when)
            text = dumps(stamped).decode()
            self.conn.execute(_UPDATE_RESOURCE, {"pk_": cur.pk, "version_id": vid, "last_updated": when,
                                                 "deleted": False, "body": text})
            self.written.add(res_type)
            self._history(res_type, res_id, vid, when, method, text)
            self._index(cur.pk, res_type, stamped, replace=True)
            stored = Stored(cur.pk, res_type, res_id, vid, when, False, text, method)
            self._hooks(stored, None if cur.deleted else cur.body)
            return stored, cur.deleted
        raise StorageError("could not lock the resource row")

    def delete(self, res_type: str, res_id: str, if_match: int | None = None) -> Stored | None:
        """Soft-delete: a new version marked deleted. None if there was nothing to delete."""
        cur = self.current(res_type, res_id, for_update=True)
        if cur is None or cur.deleted:
            if if_match is not None:
                raise VersionConflict(if_match, None)
            return None
        if if_match is not None and if_match != cur.version_id:
            raise VersionConflict(if_match, cur.version_id)
        vid = cur.version_id + 1
        when = max(now_utc(), cur.last_updated)
        self.conn.execute(_UPDATE_RESOURCE, {"pk_": cur.pk, "version_id": vid, "last_updated": when,
                                             "deleted": True, "body": None})
        self.written.add(res_type)
        self._history(res_type, res_id, vid, when, "DELETE", None)
        self._unindex(cur.pk, keep_compartments=True)
        stored = Stored(cur.pk, res_type, res_id, vid, when, True, None, "DELETE")
        self._hooks(stored, cur.body)
        return stored

    def _hooks(self, stored: Stored, previous: str | None) -> None:
        for hook in self.write_hooks:
            hook(self, stored, previous)

    def _history(self, res_type: str, res_id: str, vid: int, when: datetime, method: str,
                 text: str | None) -> None:
        self._pending.add_history({
            "res_type": res_type, "res_id": res_id, "version_id": vid, "last_updated": when,
            "method": method, "deleted": text is None, "body": text})

    def _unindex(self, pk: int, keep_compartments: bool = False) -> None:
        self._pending.unindex(pk, keep_compartments)

    def _index(self, pk: int, res_type: str, body: dict[str, Any], replace: bool) -> None:
        """Replace the index rows of one resource, in the same transaction as its version."""
        if self.indexer is None:
            return
        if replace:
            self._unindex(pk)
        self._pending.set_index(pk, res_type, self.indexer(res_type, body))

    def reindex_all(self, res_type: str | None = None, batch: int = 500) -> int:
        """Rebuild the index rows of every current resource (of one type); returns the count."""
        n, last = 0, 0
        while True:
            q = select(resource.c.pk, resource.c.res_type, resource.c.body).where(
                resource.c.deleted.is_(False), resource.c.pk > last)
            if res_type:
                q = q.where(resource.c.res_type == res_type)
            rows = list(self.conn.execute(q.order_by(resource.c.pk).limit(batch)))
            if not rows:
                return n
            for pk, rtype, body in rows:
                self._index(pk, rtype, loads(body), replace=True)
                n += 1
            last = rows[-1][0]
            self.flush()  # one batch's rows at a time in memory

    def analyze_after_commit(self) -> None:
        """Refresh the planner statistics once this transaction committed (after bulk writes)."""
        engine = self.conn.engine
        self.on_commit.append(lambda: statistics.analyze(engine))

    def recompartment_deleted(self, res_type: str | None = None) -> int:
        """Give deleted resources the compartment rows of their last content (databases written
        before deletions kept them); returns how many were restored."""
        if self.indexer is None:
            return 0

        h = resource_history
        q = select(resource.c.pk, resource.c.res_type, resource.c.res_id).where(
            resource.c.deleted.is_(True),
            ~exists().where(resource_compartment.c.res_pk == resource.c.pk))
        if res_type:
            q = q.where(resource.c.res_type == res_type)
        n = 0
        for pk, rtype, rid in list(self.conn.execute(q)):
            body = self.conn.execute(select(h.c.body).where(
                h.c.res_type == rtype, h.c.res_id == rid, h.c.body.isnot(None))
                .order_by(h.c.version_id.desc()).limit(1)).scalar()
            rows = self.indexer(rtype, loads(body)).get("compartment") if body else None
            if rows:
                self.conn.execute(insert(INDEX_TABLES["compartment"]), [{**row, "res_pk": pk} for row in rows])
                n += 1
        return n

    def reindex(self, pk: int, res_type: str, body: dict[str, Any]) -> None:
        """Recompute one resource's index rows (after the registry changed)."""
        self._index(pk, res_type, body, replace=True)

    # -- history -------------------------------------------------------------------------
    def history(self, res_type: str | None = None, res_id: str | None = None, *,
                since: datetime | None = None, at: tuple[datetime, datetime] | None = None,
                count: int = 50, before_pk: int | None = None, with_total: bool = True,
                where: Sequence[ColumnElement[bool]] = ()) -> tuple[list[Stored], int | None]:
        """Versions newest first; paged by keyset on the history sequence (`before_pk`).

        `where` holds access conditions on the `resource` table: a version is listed when the
        resource's current row satisfies them.
        """
        self.flush()
        h = resource_history
        conds: list[ColumnElement[bool]] = []
        if where:
            conds.append(exists().where(resource.c.res_type == h.c.res_type,
                                        resource.c.res_id == h.c.res_id, *where))
        if res_type:
            conds.append(h.c.res_type == res_type)
        if res_id:
            conds.append(h.c.res_id == res_id)
        if since is not None:
            conds.append(h.c.last_updated >= since)
        if at is not None:
            low, high = at
            later = h.alias("later")
            conds.append(h.c.last_updated < high)
            conds.append(~exists().where(
                later.c.res_type == h.c.res_type, later.c.res_id == h.c.res_id,
                later.c.version_id > h.c.version_id, later.c.last_updated <= low))
        total = None
        if with_total:
            total = self.conn.execute(select(func.count()).select_from(h).where(*conds)).scalar_one()
        page_conds = list(conds)
        if before_pk is not None:
            page_conds.append(h.c.pk < before_pk)
        q = select(*_HISTORY_COLS).where(*page_conds).order_by(h.c.pk.desc()).limit(count)
        return [_row(r) for r in self.conn.execute(q)], total

    # -- search --------------------------------------------------------------------------
    def search(self, res_type: str | None, where: Sequence[ColumnElement[bool]], *,
               count: int, after: Sequence[Any] | None = None, before: Sequence[Any] | None = None,
               sort: Sequence[Any] = (), with_total: bool = True, estimate: bool = False,
               ) -> tuple[list[Stored], int | None, bool, list[list[Any]]]:
        """Current, not-deleted resources matching `where`, keyset-paged.

        `sort` holds objects with `.expr` (SQL on `resource`) and `.desc`; the storage sequence
        (pk) breaks ties. `after`/`before` are cursors previously returned for a row. Returns
        (page, total, more, cursors) where `more` says a further page exists in the paging
        direction and `cursors[i]` is the cursor of page[i].

        The total costs no second scan when the first page holds every match (it is the page's
        length); otherwise one count over the same conditions, or with `estimate` on PostgreSQL
        the planner's row estimate for them (no scan at all).
        """
        self.flush()
        r = resource
        conds = [r.c.deleted.is_(False), *where]
        if res_type:
            conds.insert(0, r.c.res_type == res_type)
        if count == 0:
            return [], self._total(conds, estimate) if with_total else None, False, []
        keys = _sort_columns(sort)
        backwards = before is not None
        cursor = before if backwards else after
        q = select(*_CURRENT_COLS, *[k.label(f"k{i}") for i, (k, _d) in enumerate(keys)]).where(*conds)
        if cursor is not None:
            q = q.where(_keyset(keys, list(cursor), backwards))
        order = []
        for k, desc in keys:
            d = desc != backwards
            order.append(k.desc() if d else k.asc())
        with _own_plans(self._conn, self.postgres):
            rows = list(self._conn.execute(q.order_by(*order).limit(count + 1)))
        more = len(rows) > count
        rows = rows[:count]
        total = None
        if with_total:
            if cursor is None and not more:
                total = len(rows)  # the whole result is on this page
            else:
                total = self._total(conds, estimate)
                if estimate:
                    total = max(total, len(rows) + (1 if more else 0))
        if backwards:
            rows.reverse()
        cursors = [[getattr(row, f"k{i}") for i in range(len(keys))] for row in rows]
        return [_row(x) for x in rows], total, more, cursors

    def _total(self, conds: Sequence[ColumnElement[bool]], estimate: bool) -> int:
        """How many current resources meet `conds`: counted, or PostgreSQL's plan estimate."""
        if estimate and self.postgres:
            stmt = select(literal(1)).select_from(resource).where(*conds)
            compiled = stmt.compile(dialect=self.conn.dialect, compile_kwargs={"render_postcompile": True})
            plan = self.conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar_one()
            if isinstance(plan, str):
                plan = loads(plan)
            return max(0, int(round(plan[0]["Plan"]["Plan Rows"])))
        with _own_plans(self._conn, self.postgres):
            return self._conn.execute(select(func.count()).select_from(resource).where(*conds)).scalar_one()


_SORT_DEFAULT = {"str": "", "date": datetime(1, 1, 2, tzinfo=timezone.utc), "num": 0, "int": 0}


def _sort_columns(sort: Sequence[Any]) -> list[tuple[Any, bool]]:
    """(SQL expression, descending) per ordering column: missing values last, pk breaks ties."""
    keys: list[tuple[Any, bool]] = []
    for k in sort:
        keys.append((case((k.expr.is_(None), 1), else_=0), False))
        keys.append((func.coalesce(k.expr, _SORT_DEFAULT[k.kind]), k.desc))
    keys.append((resource.c.pk, False))
    return keys


def _keyset(keys: list[tuple[Any, bool]], values: list[Any], backwards: bool) -> ColumnElement[bool]:
    """Rows strictly after (or before) the cursor in the sort order: a lexicographic comparison."""
    alternatives = []
    for i, (col, desc) in enumerate(keys):
        equal = [keys[j][0] == values[j] for j in range(i)]
        greater = (col < values[i]) if (desc != backwards) else (col > values[i])
        alternatives.append(and_(*equal, greater))
    return or_(*alternatives)


class Repository:
    """Entry point of storage: hands out transactions on one engine."""

    def __init__(self, engine: Engine, indexer: Indexer | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.indexer = indexer
        self.write_hooks: list[WriteHook] = []  # see WriteHook
        self._statements: dict[Shape, str] = {}  # flush statements by shape (storage.pending)
        # called with the written resource types after each commit (e.g. auth caches to drop)
        self.after_commit: list[Callable[[set[str]], None]] = []
        # resources written by bulk writes since this process last analyzed (see `analyze`)
        self._bulk_written = 0
        self._bulk_lock = threading.Lock()

    def analyze(self, only_stale: bool = False, written: int = 0) -> list[str]:
        """Refresh the planner statistics of the search tables (all, or those gone stale) after
        a bulk write of `written` resources; returns the tables analyzed (see
        fhirserver.storage.statistics). The stale check adds what this process wrote since it
        last analyzed, which the database's counters may not show yet."""
        if only_stale:
            with self._bulk_lock:
                self._bulk_written += written
                unreported = self._bulk_written
            done = statistics.analyze_if_stale(self.engine, unreported)
            if done:
                with self._bulk_lock:
                    self._bulk_written = max(0, self._bulk_written - unreported)
            return done
        statistics.analyze(self.engine)
        with self._bulk_lock:
            self._bulk_written = 0
        return list(statistics.SEARCH_TABLES)

    @contextmanager
    def transaction(self, write: bool = False, single_read: bool = False) -> Iterator[Tx]:
        """One database transaction; commits when the block ends, rolls back on any exception.

        `single_read`: the block runs one SELECT (a read or vread), so on PostgreSQL it runs in
        autocommit mode, saving the BEGIN and COMMIT round trips.
        """
        with self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(fhir_write=True)
            elif single_read and self.postgres:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                tx = Tx(conn, self.postgres, self.indexer, self.write_hooks, self._statements)
                yield tx
                tx.flush()
        for hook in self.after_commit if tx.written else ():
            hook(tx.written)
        for work in tx.on_commit:
            work()


__all__ = ["Built", "Repository", "Tx", "Stored", "StorageError", "VersionConflict", "format_instant", "new_id",
           "now_utc", "stamp"]
