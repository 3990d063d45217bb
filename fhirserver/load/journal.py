"""The load journal: per target and file (by sha256), what is done, what is in flight.

Why in the database: shared state lives there, never in a host's files, and straight into the
database the journal sits beside the data it describes (a copied database carries its journal).
Through `--url` it lives in the loader's configured database, keyed by the server's base URL.

Why "in flight" is written before sending: a kill can come after the server committed and before
the loader heard back. The journal then still names the batch id that was sent, and the resumed
load sends the same Bundle with the same id again; the server recorded that id in the same
transaction as the data (`fhirserver.storage.batches`), so it either applies it now or answers
that it already did. Every journal write is its own short committed transaction.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sqlalchemy import (
    Column, DateTime, Integer, PrimaryKeyConstraint, String, Table, Text, delete, insert, select,
    update,
)
from sqlalchemy.engine import Engine

from fhirserver.storage import metadata, now_utc

load_journal = Table(
    "load_journal", metadata,
    Column("target", String(300), nullable=False),     # "database" or "url:<FHIR base>"
    Column("file_sha", String(64), nullable=False),
    Column("path", Text, nullable=False),               # as last given (for people reading the table)
    Column("state", String(10), nullable=False),       # "sending" (a Bundle), "partial" (NDJSON), "done"
    Column("batch_id", String(64), nullable=True),     # the batch id of the request in flight
    Column("inflight", Text, nullable=True),           # NDJSON: JSON list of the line numbers in flight
    Column("lines", Integer, nullable=False, default=0),  # NDJSON: lines settled up to here...
    Column("retry", Text, nullable=True),              # ...except these (JSON list), which failed
    Column("resources", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("target", "file_sha", name="pk_load_journal"),
)

JOURNAL_TABLES = (load_journal,)


@dataclasses.dataclass
class FileState:
    """What the journal knows about one file."""

    state: str
    batch_id: str | None = None
    inflight: list[int] = dataclasses.field(default_factory=list)
    lines: int = 0
    retry: list[int] = dataclasses.field(default_factory=list)
    resources: int = 0

    @property
    def done(self) -> bool:
        return self.state == "done"


def _ints(text: str | None) -> list[int]:
    return [int(n) for n in json.loads(text)] if text else []


class Journal:
    """Reads and writes one target's rows of `load_journal`."""

    def __init__(self, engine: Engine, target: str) -> None:
        self.engine = engine
        self.target = target

    def get(self, sha: str) -> FileState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(load_journal).where(
                load_journal.c.target == self.target, load_journal.c.file_sha == sha)).first()
        if row is None:
            return None
        return FileState(row.state, row.batch_id, _ints(row.inflight), row.lines, _ints(row.retry),
                         row.resources)

    def files(self) -> dict[str, FileState]:
        """Every file of this target, by sha256 (for tests and operators)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(load_journal.c.file_sha).where(
                load_journal.c.target == self.target)).scalars().all()
        return {sha: state for sha in rows if (state := self.get(sha)) is not None}

    def sending(self, sha: str, path: Path, batch_id: str) -> None:
        """Intent: this Bundle file is about to be sent under `batch_id`."""
        self._put(sha, path, FileState("sending", batch_id))

    def partial(self, sha: str, path: Path, lines: int, retry: list[int], resources: int,
                batch_id: str | None = None, inflight: list[int] | None = None) -> None:
        """NDJSON progress; with `batch_id`, also the intent to send the lines `inflight`."""
        self._put(sha, path, FileState("partial", batch_id, list(inflight or []), lines,
                                       sorted(set(retry)), resources))

    def done(self, sha: str, path: Path, resources: int) -> None:
        self._put(sha, path, FileState("done", resources=resources))

    def _put(self, sha: str, path: Path, st: FileState) -> None:
        values = {"path": str(path), "state": st.state, "batch_id": st.batch_id,
                  "inflight": json.dumps(st.inflight) if st.inflight else None, "lines": st.lines,
                  "retry": json.dumps(st.retry) if st.retry else None, "resources": st.resources,
                  "updated_at": now_utc()}
        key = (load_journal.c.target == self.target, load_journal.c.file_sha == sha)
        # fhir_write: on SQLite take the write lock at BEGIN, like every other writer
        with self.engine.connect() as conn, conn.execution_options(fhir_write=True).begin():
            if conn.execute(update(load_journal).where(*key).values(**values)).rowcount == 0:
                conn.execute(insert(load_journal).values(target=self.target, file_sha=sha, **values))

    def forget(self) -> None:
        """Drop this target's rows (the next load sends every file again)."""
        with self.engine.begin() as conn:
            conn.execute(delete(load_journal).where(load_journal.c.target == self.target))


__all__ = ["FileState", "JOURNAL_TABLES", "Journal", "load_journal"]
