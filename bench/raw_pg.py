"""The raw PostgreSQL reference of `bench.run`: the rows the server writes for a create, read and
update, issued with psycopg by CLIENTS connections, so the server's ratio is against its own
database's limit (see `bench.run`'s docstring for what each phase sends)."""
from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from bench import loadgen



from bench.harness import CLIENTS, CpuMeter, Phase


SQL_INSERT = ("INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, body) "
              "VALUES (%s, %s, %s, %s, false, CAST(%s AS JSONB)) RETURNING resource.pk")
SQL_HISTORY = ("INSERT INTO resource_history (res_type, res_id, version_id, last_updated, method, deleted, body) "
               "VALUES (%s, %s, %s, %s, %s, false, CAST(%s AS JSONB))")
SQL_SELECT = ("SELECT resource.pk, resource.res_type, resource.res_id, resource.version_id, "
              "resource.last_updated, resource.deleted, CAST(resource.body AS TEXT) AS body "
              "FROM resource WHERE resource.res_type = %s AND resource.res_id = %s")
SQL_UPDATE = ("UPDATE resource SET version_id=%s, last_updated=%s, deleted=false, body=CAST(%s AS JSONB) "
              "WHERE resource.pk = %s")


def stamped_text(body: dict[str, Any], res_id: str, vid: int, when: datetime) -> str:
    """The JSON text the server stores: id and meta first, then the client's elements."""
    out = {"resourceType": body["resourceType"], "id": res_id,
           "meta": {"versionId": str(vid), "lastUpdated": when.isoformat(timespec="milliseconds")}}
    out.update({k: v for k, v in body.items() if k not in out})
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> datetime:
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


_PK, _RID = object(), object()  # placeholders in the index-row templates


@dataclasses.dataclass
class DependentRows:
    """Rows the server writes beside `resource` for one resource (search index, compartments):
    one table, its columns and their SQL types, and row templates with the resource's pk and id
    as placeholders."""

    table: str
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def insert_sql(self) -> Any:
        """One INSERT ... SELECT FROM unnest(arrays): all rows of the table in one short,
        cacheable statement with one parameter per column."""
        from psycopg import sql

        return sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in self.types))

    def delete_sql(self) -> Any:
        from psycopg import sql

        return sql.SQL("DELETE FROM {} WHERE res_pk = %s").format(sql.Identifier(self.table))

    def params(self, pk: int, rid: str) -> list[list[Any]]:
        return [[pk if v is _PK else rid if v is _RID else v for v in col] for col in zip(*self.rows)]


def dependent_rows(url: str, res_type: str, res_id: str) -> list[DependentRows]:
    """What the server wrote for one resource in every table keyed by `res_pk` (found from the
    schema, so the raw reference follows the server's write path as it evolves)."""
    import psycopg
    from psycopg import sql

    out: list[DependentRows] = []
    with psycopg.connect(url) as conn:
        pk = conn.execute("SELECT pk FROM resource WHERE res_type = %s AND res_id = %s",
                          (res_type, res_id)).fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'res_pk' ORDER BY table_name")]
        for table in tables:
            cols = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attidentity = '' AND NOT EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = a.attrelid "
                "AND d.adnum = a.attnum AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval%%') "
                "ORDER BY a.attnum", (table,)).fetchall()
            names = [c for c, _t in cols]
            rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE res_pk = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)), (pk,)).fetchall()
            if rows:
                tpl = [tuple(_PK if c == "res_pk" else _RID if v == res_id else v for c, v in zip(names, row))
                       for row in rows]
                out.append(DependentRows(table, names, [t for _c, t in cols], tpl))
    return out


class RawClients:
    """CLIENTS psycopg connections (autocommit off), each driven by its own thread, issuing the
    rows the server writes: `resource`, `resource_history` and the dependent rows (search index,
    compartments) the server wrote for a Patient, with one multi-row INSERT per table.

    The threads mostly wait on PostgreSQL (psycopg releases the GIL), so this measures the
    database; the client's own CPU is reported beside it.
    """

    def __init__(self, url: str, template: dict[str, Any]) -> None:
        import psycopg

        self.conns = [psycopg.connect(url, autocommit=False) for _ in range(CLIENTS)]
        self.template = template
        self.ids: list[str] = []
        self.dependent: list[tuple[DependentRows, Any, Any]] = []

    def set_dependent(self, dep: list[DependentRows]) -> None:
        c = self.conns[0]  # rendered once to plain SQL text: psycopg caches and prepares it
        self.dependent = [(d, d.insert_sql().as_string(c), d.delete_sql().as_string(c)) for d in dep]

    def rows_per_write(self) -> dict[str, int]:
        return {"resource": 1, "resource_history": 1, **{d.table: len(d.rows) for d, _i, _d in self.dependent}}

    def pids(self) -> list[int]:
        return [c.info.backend_pid for c in self.conns]

    def close(self) -> None:
        for c in self.conns:
            c.close()

    # the server's rows for create / read / update -------------------------------------------------
    def create(self, conn: Any, _rnd: random.Random) -> None:
        rid = str(uuid.uuid4())
        when = now_ms()
        text = stamped_text(self.template, rid, 1, when)
        with conn.cursor() as cur:
            cur.execute(SQL_INSERT, ("Patient", rid, 1, when, text))
            pk = cur.fetchone()[0]
            cur.execute(SQL_HISTORY, ("Patient", rid, 1, when, "POST", text))
            for dep, ins, _del in self.dependent:
                cur.execute(ins, dep.params(pk, rid))
        conn.commit()
        self.ids.append(rid)  # list.append is atomic under the GIL

    def read(self, conn: Any, rnd: random.Random) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT, ("Patient", rid))
            row = cur.fetchone()
        conn.commit()
        if row is None:
            raise LookupError(rid)

    def update(self, conn: Any, rnd: random.Random) -> None:
        rid = self.ids[rnd.randrange(len(self.ids))]
        with conn.cursor() as cur:
            cur.execute(SQL_SELECT + " FOR UPDATE", ("Patient", rid))
            pk, _t, _i, vid, last, _d, _body = cur.fetchone()
            vid += 1
            when = max(now_ms(), last)
            text = stamped_text({**self.template, "id": rid}, rid, vid, when)
            cur.execute(SQL_UPDATE, (vid, when, text, pk))
            cur.execute(SQL_HISTORY, ("Patient", rid, vid, when, "PUT", text))
            for dep, ins, dele in self.dependent:
                cur.execute(dele, (pk,))
                cur.execute(ins, dep.params(pk, rid))
        conn.commit()

    def phase(self, name: str, op: Callable[[Any, random.Random], None], seconds: float,
              warmup: float) -> Phase:
        """Every connection loops `op` for warmup+seconds; the window after warm-up counts."""
        lats: list[list[int]] = [[] for _ in self.conns]
        errors = [0] * len(self.conns)
        done = [0] * len(self.conns)
        bounds: dict[str, int] = {}
        barrier = threading.Barrier(len(self.conns) + 1)

        def work(k: int) -> None:
            conn, rnd, out, perf = self.conns[k], random.Random(k), lats[k], time.perf_counter_ns
            barrier.wait()
            t_measure, t_end = bounds["measure"], bounds["end"]
            while True:
                t0 = perf()
                if t0 >= t_end:
                    break
                try:
                    op(conn, rnd)
                except Exception:  # noqa: BLE001 - counted, the phase goes on
                    conn.rollback()
                    errors[k] += 1
                t1 = perf()
                done[k] += 1
                if t0 >= t_measure and t1 <= t_end:
                    out.append(t1 - t0)

        meter = CpuMeter([], self.pids)
        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(self.conns))]
        for t in threads:
            t.start()
        with meter:
            t0 = time.perf_counter_ns()
            bounds["measure"] = t0 + int(warmup * 1e9)
            bounds["end"] = bounds["measure"] + int(seconds * 1e9)
            barrier.wait()
            for t in threads:
                t.join()
        lat = [x for xs in lats for x in xs]
        res = loadgen.Result(seconds, lat, {200: len(lat)}, sum(errors), meter.client, [], sum(done))
        return Phase(name, res, meter)

