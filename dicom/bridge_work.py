"""The queue of ImagingStudy updates still to do (table `dicom_bridge_work`).

An instance is acknowledged only once its index row and its study's work item are committed
together; the ImagingStudy update itself runs later (at the end of the association, or by the
node's background runner, or at the next start after a crash). A work item is deleted only if
no instance arrived for its study since the update began (its `seq` is unchanged), so an update
that raced with a newer instance leaves the item for another pass instead of losing it.
"""
from __future__ import annotations

import functools
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from dicom.bridge import update_study
from dicom.tables import dicom_bridge_work
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

QUIET_SECONDS = 10.0  # the background runner leaves studies still receiving to their association


def _now() -> datetime:
    return datetime.now(timezone.utc)


def enqueue(conn: Connection, study_uids: Iterable[str]) -> None:
    """Mark these studies' ImagingStudies as due, in the caller's transaction."""
    uids = sorted(set(study_uids))  # a fixed lock order between concurrent batches
    if not uids:
        return
    now = _now()
    conn.execute(_enqueue_stmt(conn.dialect.name),
                 [{"study_uid": u, "seq": 1, "touched": now, "attempts": 0} for u in uids])


@functools.lru_cache(maxsize=4)
def _enqueue_stmt(dialect: str) -> Any:
    """Built once (it runs in every C-STORE's commit)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(dicom_bridge_work)
    return stmt.on_conflict_do_update(
        index_elements=["study_uid"],
        set_={"seq": dicom_bridge_work.c.seq + 1, "touched": stmt.excluded.touched})


def due(repo: Repository, quiet: float | None = None, limit: int = 500) -> list[str]:
    """Studies with an update to do; with `quiet`, only those untouched for that many seconds,
    doubled with every failed attempt (up to an hour), so a study that cannot be bridged does
    not fill the log every few seconds."""
    cols = (dicom_bridge_work.c.study_uid, dicom_bridge_work.c.touched, dicom_bridge_work.c.attempts)
    q = select(*cols).order_by(dicom_bridge_work.c.touched).limit(limit)
    now = _now()
    if quiet is not None:
        q = q.where(dicom_bridge_work.c.touched < now - timedelta(seconds=quiet))
    with repo.engine.connect() as conn:
        rows = conn.execute(q).all()
    if quiet is None:
        return [r.study_uid for r in rows]
    out = []
    for r in rows:
        touched = r.touched if r.touched.tzinfo else r.touched.replace(tzinfo=timezone.utc)  # SQLite
        if now - touched >= timedelta(seconds=min(quiet * 2 ** min(r.attempts, 12), 3600)):
            out.append(r.study_uid)
    return out


def _seq(repo: Repository, study_uid: str) -> int | None:
    with repo.engine.connect() as conn:
        return conn.execute(select(dicom_bridge_work.c.seq)
                            .where(dicom_bridge_work.c.study_uid == study_uid)).scalar()


def process(repo: Repository, study_uids: Iterable[str], dicomweb_base: str,
            policy_for: Callable[[str], Any]) -> dict[str, bool]:
    """Bring the ImagingStudies of these studies up to date where work is queued; True per
    study done (or with nothing to do), False when its update failed (it stays queued).
    `policy_for(study_uid)` is the access policy of the node that sent the study: its patient
    is matched among the patients that node may see."""
    out: dict[str, bool] = {}
    for uid in sorted(set(study_uids)):
        seq = _seq(repo, uid)
        if seq is None:  # done by another association or process since it was queued
            out[uid] = True
            continue
        try:
            update_study(repo, uid, dicomweb_base, policy_for(uid))
        except Exception as exc:  # noqa: BLE001 - one bad study must not block the others
            log.exception("dicom: ImagingStudy update failed for study %s (kept queued)", uid)
            _failed(repo, uid, exc)
            out[uid] = False
            continue
        with repo.transaction(write=True) as tx:
            tx.conn.execute(delete(dicom_bridge_work).where(dicom_bridge_work.c.study_uid == uid,
                                                            dicom_bridge_work.c.seq == seq))
        out[uid] = True
    return out


def _failed(repo: Repository, uid: str, exc: Exception) -> None:
    try:
        with repo.transaction(write=True) as tx:  # touched: the runner waits before a retry
            tx.conn.execute(update(dicom_bridge_work).where(dicom_bridge_work.c.study_uid == uid).values(
                attempts=dicom_bridge_work.c.attempts + 1, touched=_now(),
                last_error=f"{type(exc).__name__}: {exc}"[:500]))
    except Exception:  # noqa: BLE001 - the database may be the reason; the item stays anyway
        log.exception("dicom: cannot record the failed ImagingStudy update of %s", uid)


class WorkRunner:
    """A background thread that does queued updates nobody else will do: those left by a crash
    or a failure, once their study has been quiet for QUIET_SECONDS."""

    def __init__(self, repo: Repository, dicomweb_base: str, policy_for: Callable[[str], Any],
                 interval: float = 2.0) -> None:
        self.repo, self.base, self.interval = repo, dicomweb_base, interval
        self.policy_for = policy_for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicom-bridge-work", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                uids = due(self.repo, quiet=QUIET_SECONDS)
                if uids:
                    process(self.repo, uids, self.base, self.policy_for)
            except Exception:  # noqa: BLE001 - database away: try again next round
                log.exception("dicom: queued ImagingStudy updates failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
