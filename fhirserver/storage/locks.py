"""Locks that make conditional writes atomic and keep transactions from deadlocking.

Conditional criteria (`If-None-Exist`, `PUT/PATCH/DELETE Type?criteria`, Bundle `ifNoneExist` and
conditional urls) are serialized with a transaction-scoped PostgreSQL advisory lock on a hash of
the normalized criteria, taken before the match query. Why advisory locks rather than HAPI's
table of resolved conditional URLs with a unique key:

- one mechanism serves creates, updates, patches and deletes: a unique row only guards "create
  if absent", while an update or delete must also exclude a concurrent create of the same match;
- nothing to clean up: the lock goes away at commit or rollback, whereas a URL table needs its
  rows removed when a resource stops matching (update, delete, $erase) or it refuses valid
  creates forever, and needs its own migration and reindexing story;
- the waiter sees the winner's row: under READ COMMITTED the match query runs after the lock is
  granted, and PostgreSQL makes a commit visible before it releases the committer's locks.

The cost is that two different criteria matching the same resource (`identifier=x` and
`identifier=x&name=y`) are not excluded from each other, the same limit HAPI has. A hash
collision only serializes two unrelated criteria. SQLite needs none of this: a write
transaction starts with `BEGIN IMMEDIATE` and holds the database's one write lock.

`lock_rows` takes the row locks of the resources a transaction Bundle will write up front, in one
canonical order, so two Bundles touching the same resources in opposite entry orders queue behind
each other instead of deadlocking.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence
from urllib.parse import urlencode

from sqlalchemy import bindparam, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.engine import Connection

from fhirserver.storage.tables import resource

_NAMESPACE = "fhir-conditional"
_LOCK_MANY = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) "
                  "WITH ORDINALITY AS t(k, n)").bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def normalized_criteria(res_type: str, params: Sequence[tuple[str, str]]) -> str:
    """`Type?a=1&b=2` with parameters sorted and repeated pairs once: the same search, one text."""
    pairs = sorted({(k, v) for k, v in params if not k.startswith("_format")})
    return f"{res_type}?{urlencode(pairs)}"


def criteria_key(res_type: str, params: Sequence[tuple[str, str]]) -> int:
    """A signed 64-bit advisory lock key for the criteria."""
    digest = hashlib.sha256(f"{_NAMESPACE}|{normalized_criteria(res_type, params)}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_criteria(conn: Connection, postgres: bool, criteria: Iterable[tuple[str, Sequence[tuple[str, str]]]],
                  held: set[int]) -> None:
    """Hold the lock of each (type, params) until the transaction ends; keys in ascending order,
    so that transactions locking several criteria cannot wait on each other in a cycle.
    `held`: the keys this transaction already holds (skipped, then added)."""
    if not postgres:
        return
    keys = sorted({criteria_key(t, p) for t, p in criteria} - held)
    held.update(keys)
    if len(keys) == 1:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": keys[0]})
    elif keys:
        # unnest WITH ORDINALITY scans the array in order: the locks are taken in key order
        conn.execute(_LOCK_MANY, {"keys": keys})


def lock_rows(conn: Connection, postgres: bool, keys: Iterable[tuple[str, str]]) -> None:
    """`SELECT ... FOR UPDATE` the current rows of these (type, id), sorted by type then id.

    Rows that do not exist yet are not locked (a concurrent create of the same id is settled by
    the primary key); the caller's retry covers what remains.
    """
    if not postgres:
        return
    wanted = sorted(set(keys))  # code point order, the same as COLLATE "C" below
    if not wanted:
        return
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        q = (select(resource.c.pk).where(tuple_(resource.c.res_type, resource.c.res_id).in_(chunk))
             .order_by(resource.c.res_type.collate("C"), resource.c.res_id.collate("C")).with_for_update())
        conn.execute(q).all()


__all__ = ["criteria_key", "lock_criteria", "lock_rows", "normalized_criteria"]
