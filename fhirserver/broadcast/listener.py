"""This process's view of the shared stamps: a LISTEN thread on PostgreSQL, the rows otherwise.

On SQLite (one machine, several processes) a private connection asks `PRAGMA data_version`,
which changes whenever another connection committed: only then are the rows read again.

Why correctness never depends on a notification: `stamp()` trusts the listener's copy only while
its connection is up and was confirmed within `FRESH_SECONDS` (a heartbeat re-reads every row);
otherwise it reads the row itself. A reconnect re-reads every row after LISTEN, so a change
committed while the listener was down is seen at once. Before answering from its copy, `stamp()`
drains the listener's socket in the calling thread (a non-blocking read), so a notification
PostgreSQL already sent counts even if the listener thread has not been scheduled yet.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from typing import Any, Callable

from sqlalchemy.engine import Engine

from fhirserver.broadcast.stamps import PG_CHANNEL, read_all, read_stamp

HEARTBEAT_SECONDS = 5.0
FRESH_SECONDS = 12.0      # a silent (half-open) listener is distrusted after this
RECONNECT_MAX_SECONDS = 5.0
STOP_POLL = 0.2           # seconds: how soon the listener thread notices a stop
APPLICATION_NAME = "fhirserver-broadcast"  # how operators (and tests) find the listener sessions

log = logging.getLogger("fhirserver.broadcast")


class Broadcast:
    """Stamps of the channels (and values cached under them) for one engine in this process."""

    def __init__(self, engine: Engine, *, heartbeat: float = HEARTBEAT_SECONDS,
                 fresh: float = FRESH_SECONDS, reconnect_after: float = 0.1) -> None:
        self.engine = engine
        self.reconnect_after = reconnect_after  # the first retry's delay; doubles up to 5 s
        self.postgres = engine.dialect.name == "postgresql"
        self.heartbeat = heartbeat
        self.fresh = fresh
        self._lock = threading.Lock()        # the listener connection and its stamps
        self._start_lock = threading.Lock()
        self._conn: Any = None               # psycopg.Connection while listening
        self._stamps: dict[str, int] = {}
        self._fresh_until = 0.0
        self._pid: int | None = None
        self._inherited: list[Any] = []      # a parent's connection: never closed by a child
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # this process's listener thread
        self._shut = False
        self._cache: dict[tuple[str, str], tuple[int, Any]] = {}
        self._cache_lock = threading.Lock()
        self._sqlite: Any = None             # (pid, sqlite3.Connection, data_version, stamps)
        self._sqlite_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------
    def stamp(self, channel: str) -> int:
        """The current stamp of `channel`; -1 when unknown (then trust nothing cached)."""
        if self._shut:  # no listener any more: the row answers
            return read_stamp(self.engine, channel)
        if self.postgres:
            self._ensure_listener()
            mine = self._listened(channel)
            if mine is not None:
                return mine
        elif self.engine.url.database and self.engine.url.database != ":memory:":
            return self._sqlite_stamp(channel)
        return read_stamp(self.engine, channel)

    def _sqlite_stamp(self, channel: str) -> int:
        """The row, re-read only when another connection committed since (data_version first:
        a commit between the two reads then shows as a new version next time)."""
        import sqlite3

        with self._sqlite_lock:
            try:
                pid = os.getpid()
                if self._sqlite is None or self._sqlite[0] != pid:  # never a parent's connection
                    if self._sqlite is not None:
                        self._inherited.append(self._sqlite[1])  # kept open: not ours to close
                    conn = sqlite3.connect(self.engine.url.database, timeout=60, isolation_level=None,
                                           check_same_thread=False)
                    self._sqlite = (pid, conn, None, {})
                _pid, conn, seen, stamps = self._sqlite
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    stamps = dict(conn.execute("SELECT channel, stamp FROM broadcast_stamp").fetchall())
                    self._sqlite = (pid, conn, version, stamps)
                return int(stamps.get(channel, 0))
            except sqlite3.Error:
                self._sqlite = None
                return -1

    def listening(self) -> bool:
        """Whether stamps currently come from the LISTEN connection (else from the rows)."""
        return self._conn is not None and time.monotonic() < self._fresh_until

    def cached(self, channel: str, key: str, load: Callable[[], Any]) -> Any:
        """`load()`'s value, reused while `channel`'s stamp is unchanged (on every host)."""
        s = self.stamp(channel)  # read before loading: a change during the load shows next time
        with self._cache_lock:
            hit = self._cache.get((channel, key))
        if hit is not None and s != -1 and hit[0] == s:
            return hit[1]
        val = load()
        if s != -1:
            with self._cache_lock:
                self._cache[(channel, key)] = (s, val)
        return val

    def settle(self, channel: str, stamp: int, timeout: float = 0.5) -> bool:
        """Wait (briefly) until this process's listener saw `stamp`, after its commit.

        NOTIFY is delivered after the commit returns, so a revoking request that answered at
        once could let its client reach another host before that host's listener heard. Once
        our own listener has the notification, PostgreSQL has signalled every listener; the
        answer then goes out. False when it did not arrive in time (the rows still hold)."""
        if not self.postgres:
            return True
        deadline = time.monotonic() + timeout
        while True:
            mine = self._listened(channel)
            if mine is None or mine >= stamp:  # not listening: nobody relies on notifications
                return mine is None or mine >= stamp
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _listened(self, channel: str) -> int | None:
        if not self._lock.acquire(blocking=False):
            return None  # the listener is busy (a heartbeat): the row answers instead
        try:
            if self._conn is None or time.monotonic() >= self._fresh_until:
                return None
            if not self._drain():
                return None
            return self._stamps.get(channel, 0)
        finally:
            self._lock.release()

    def _drain(self) -> bool:
        """Apply what PostgreSQL already sent (holding `_lock`); False when the connection broke."""
        from psycopg import pq

        pg = self._conn.pgconn
        try:
            pg.consume_input()
        except Exception:  # noqa: BLE001 - a broken connection: the rows answer until reconnected
            self._fresh_until = 0.0
            return False
        if pg.status != pq.ConnStatus.OK:
            self._fresh_until = 0.0
            return False
        while (n := pg.notifies()) is not None:
            self._apply(n.extra.decode(errors="replace"))
        return True

    def _apply(self, payload: str) -> None:
        channel, _, stamp = payload.rpartition(":")
        try:
            value = int(stamp)
        except ValueError:
            return
        if value > self._stamps.get(channel, 0):
            self._stamps[channel] = value

    # -- the listener thread ---------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid or self._shut:
                return
            if self._conn is not None:  # forked: the socket is the parent's; leave it open
                self._inherited.append(self._conn)
            self._conn, self._fresh_until, self._stamps = None, 0.0, {}
            self._lock = threading.Lock()
            self._stop = threading.Event()
            self._pid = pid
            self._thread = threading.Thread(target=_run_listener, args=(weakref.ref(self), self._stop),
                                            name="fhirserver-broadcast", daemon=True)
            self._thread.start()

    def _connect(self) -> Any:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(url, autocommit=True, application_name=APPLICATION_NAME,
                               connect_timeout=10, keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3)

    def _open(self) -> Any:
        """A listening connection, its stamps read after LISTEN (nothing committed since is missed)."""
        conn = self._connect()
        try:
            ref = weakref.ref(self)  # the connection must not keep its Broadcast alive
            conn.add_notify_handler(lambda n: _apply_to(ref, n.payload))  # during a heartbeat
            conn.execute(f"LISTEN {PG_CHANNEL}")
            stamps = read_all(conn)
        except Exception:
            conn.close()
            raise
        with self._lock:
            self._stamps = stamps
            self._conn = conn
            self._fresh_until = time.monotonic() + self.fresh
        return conn

    def _beat(self, conn: Any, readable: bool, due: bool) -> None:
        """Drain what arrived; on a heartbeat, re-read every row (also repairs a lost notification)."""
        with self._lock:
            if readable and not self._drain():
                raise ConnectionError("the listener connection broke")
            if due:
                for ch, s in read_all(conn).items():
                    if s > self._stamps.get(ch, 0):
                        self._stamps[ch] = s
                self._fresh_until = time.monotonic() + self.fresh

    def _closed(self, conn: Any) -> None:
        with self._lock:
            self._conn, self._fresh_until = None, 0.0
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - already broken
            pass

    def stop(self) -> None:
        """Ask the listener thread to end (it notices within STOP_POLL and closes its connection)."""
        self._stop.set()

    def close(self, timeout: float = 5.0) -> None:
        """End the listener thread and wait for it, and close the SQLite stamp connection
        (idempotent). Stamps are read from the rows afterwards, so a closed Broadcast still
        answers correctly, only without a connection of its own."""
        with self._start_lock:
            if self._shut:
                return
            self._shut = True
            thread = self._thread if self._pid == os.getpid() else None  # a parent's is not ours
            self._thread = None
        self._stop.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("broadcast listener did not stop within %.0f s", timeout)
        with self._sqlite_lock:
            if self._sqlite is not None and self._sqlite[0] == os.getpid():
                try:
                    self._sqlite[1].close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
            self._sqlite = None


def _apply_to(ref: "weakref.ref[Broadcast]", payload: str) -> None:
    me = ref()
    if me is not None:
        me._apply(payload)


def _run_listener(ref: "weakref.ref[Broadcast]", stop: threading.Event) -> None:
    """The listener thread: connect, listen, reconnect with backoff. It holds its Broadcast only
    weakly between steps, so an app that is dropped (tests build many) ends its thread."""
    backoff: float | None = None
    failures = 0  # one warning per outage, not one per retry
    while not stop.is_set():
        me = ref()
        if me is None:
            return
        backoff = me.reconnect_after if backoff is None else backoff
        heartbeat = me.heartbeat
        conn = None
        try:
            conn = me._open()
            backoff, failures = me.reconnect_after, 0
            next_beat = time.monotonic() + heartbeat
            del me
            while not stop.is_set():
                # a short wait bounds how long close() takes (an idle select costs nothing)
                wait = min(max(0.0, next_beat - time.monotonic()), STOP_POLL)
                readable, _, _ = select.select([conn.pgconn.socket], [], [], wait)
                me = ref()
                if me is None:
                    conn.close()
                    return
                due = time.monotonic() >= next_beat
                me._beat(conn, bool(readable), due)
                if due:
                    next_beat = time.monotonic() + heartbeat
                del me
        except Exception as exc:  # noqa: BLE001 - any failure: distrust the copy, reconnect
            if not stop.is_set():
                (log.debug if failures else log.warning)("broadcast listener reconnecting: %s", exc)
            failures += 1
        finally:
            me = ref()
            if conn is not None:
                if me is not None:
                    me._closed(conn)
                else:
                    conn.close()
            me = None
        stop.wait(backoff)
        backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)


__all__ = ["APPLICATION_NAME", "Broadcast"]
