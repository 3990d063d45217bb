"""Group commit of index rows: C-STORE answers only once the instance is findable.

Every association thread hands its instance's rows to one committer thread per process and
waits. The committer writes whatever is waiting, from all associations, in one transaction (the
rows plus the studies' ImagingStudy work items) and wakes the waiters with the outcome. While
one transaction commits, the next batch gathers, so concurrent stores share commits and a lone
association pays one commit per instance, no extra delay.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from dicom import bridge_work, index
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

MAX_BATCH = 256
WAIT_SECONDS = 30.0  # well inside the modality's DIMSE timeout: it hears a failure, not silence


class CommitFailed(Exception):
    """The rows could not be committed (database down, disk full): answer a failure status."""


class _Ticket:
    __slots__ = ("record", "done", "error")

    def __init__(self, record: index.InstanceRecord) -> None:
        self.record = record
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommitter:
    def __init__(self, repo: Repository, max_batch: int = MAX_BATCH) -> None:
        self.repo = repo
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Ticket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dicom-index-commit", daemon=True)
        self._thread.start()

    def submit(self, record: index.InstanceRecord, timeout: float = WAIT_SECONDS) -> None:
        """Return once the record's rows are committed; CommitFailed otherwise."""
        ticket = _Ticket(record)
        with self._cond:
            if self._closed:
                raise CommitFailed("the node is stopping")
            self._pending.append(ticket)
            self._cond.notify()
        if not ticket.done.wait(timeout):
            raise CommitFailed(f"index not written within {timeout:.0f} s")
        if ticket.error is not None:
            raise CommitFailed(str(ticket.error)) from ticket.error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
            self._commit(batch)

    def _commit(self, batch: list[_Ticket]) -> None:
        try:
            self._write([t.record for t in batch])
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                log.error("dicom: index write failed for %s: %s", batch[0].record.instance["sop_uid"], exc)
                batch[0].error = exc
            else:  # one bad row must not fail the instances of other associations
                log.warning("dicom: index write of %d instances failed (%s); one by one", len(batch), exc)
                for t in batch:
                    self._commit([t])
                return
        for t in batch:
            t.done.set()

    def _write(self, records: list[Any]) -> None:
        with self.repo.transaction(write=True) as tx:
            studies = index.write_batch(tx.conn, records)
            bridge_work.enqueue(tx.conn, studies)
