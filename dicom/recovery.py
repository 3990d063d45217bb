"""Start-up reconciliation of the instance store with the index, after a crash at any point.

The receiver writes in this order: temporary file, renamed into place, index row and ImagingStudy
work item committed together, then the acknowledgement. So a crash leaves at worst
- a temporary file (never acknowledged): removed once the process that wrote it is gone;
- an object without an index row (never acknowledged, the sender will resend): indexed now, it
  is a whole data set the sender wanted stored;
- queued ImagingStudy work: done now;
- the file of an erased instance (the erasure deletes it after its commit): deleted now.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from io import BytesIO
from typing import Any, Callable

from pydicom import dcmread
from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID
from sqlalchemy import delete, select

from dicom import bridge_work, completeness, index
from dicom.tables import dicom_erased_object, dicom_instance
from fhirserver.blobs import BlobStore, LocalBlobStore
from fhirserver.storage import Repository

log = logging.getLogger("fhirserver.dicom")

STALE_TEMP_SECONDS = 3600.0  # a temporary file this old is stale even if its writer's pid is alive
BATCH = 200


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # we are starting: none of our own writes is in flight
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stray_temps(store: LocalBlobStore) -> int:
    """Remove temporary files whose writer is gone (other receiving processes sharing the
    folder keep theirs). Names are `<pid>-<thread>-<n>.part`."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(store.tmp))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            pid = int(entry.name.split("-", 1)[0])
        except ValueError:
            pid = -1
        try:
            stale = pid < 0 or not _alive(pid) or now - entry.stat().st_mtime > STALE_TEMP_SECONDS
            if stale:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("dicom: cannot remove stray temporary file %s: %s", entry.path, exc)
    return removed


def read_record(store: LocalBlobStore, key: str) -> index.InstanceRecord:
    """The index rows of a stored object, as the receiver would have written them."""
    path = store.local_path(key)
    assert path is not None
    data = path.read_bytes()
    fp = BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    ts = UID(str(meta.get("TransferSyntaxUID", "")))
    start = fp.tell()
    if ts == "1.2.840.10008.1.2.1.99" or not ts.is_transfer_syntax:
        ds, offset = dcmread(BytesIO(data), stop_before_pixels=True), 0
    else:
        body = BytesIO(memoryview(data)[start:])
        ds = read_dataset(body, ts.is_implicit_VR, ts.is_little_endian, stop_when=_at_pixel_data)
        offset = body.tell()
    calling = str(meta.get("SourceApplicationEntityTitle", "") or "").strip()
    record = index.extract(ds, str(ts), key, len(data), calling)
    record.instance["incomplete"] = completeness.check(ds, memoryview(data)[start:], offset, str(ts))
    record.instance["received"] = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return record


def finish_erasures(repo: Repository, store: BlobStore, orphans: list[str]) -> list[str]:
    """Delete the files of erased objects a crash left behind; the orphans still to index."""
    with repo.engine.connect() as conn:
        erased = {r[0] for r in conn.execute(select(dicom_erased_object.c.storage_key))}
    if not erased:
        return orphans
    for key in erased.intersection(orphans):
        store.delete(key)
        log.warning("dicom: file of erased object %s deleted at start-up", key)
    with repo.transaction(write=True) as tx:  # done: the same bytes may legitimately come again
        tx.conn.execute(delete(dicom_erased_object).where(
            dicom_erased_object.c.storage_key.in_(sorted(erased))))
    return [k for k in orphans if k not in erased]


def finish_object_erasures(repo: Repository, store: BlobStore) -> int:
    """Delete the objects of erasures a crash interrupted (their keys are recorded before the
    erasure commits), unless the same bytes were indexed again since."""
    with repo.engine.connect() as conn:
        erased = {r[0] for r in conn.execute(select(dicom_erased_object.c.storage_key))}
        if not erased:
            return 0
        again = {r[0] for r in conn.execute(select(dicom_instance.c.storage_key).where(
            dicom_instance.c.storage_key.in_(sorted(erased))))}
    for key in sorted(erased - again):
        store.delete(key)
    with repo.transaction(write=True) as tx:
        tx.conn.execute(delete(dicom_erased_object).where(
            dicom_erased_object.c.storage_key.in_(sorted(erased))))
    return len(erased - again)


def index_orphans(repo: Repository, store: LocalBlobStore) -> tuple[int, int]:
    """Index stored objects that have no index row; (indexed, unreadable)."""
    with repo.engine.connect() as conn:
        known = {r[0] for r in conn.execute(select(dicom_instance.c.storage_key).distinct())}
    orphans = finish_erasures(repo, store, [k for k in store.keys() if k not in known])
    indexed = unreadable = 0
    for start in range(0, len(orphans), BATCH):
        records = []
        for key in orphans[start:start + BATCH]:
            try:
                records.append(read_record(store, key))
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001 - left as it is, for a person to look at
                log.warning("dicom: stored object %s cannot be indexed: %s", key, exc)
                unreadable += 1
        if not records:
            continue
        uids = [r.instance["sop_uid"] for r in records]
        with repo.transaction(write=True) as tx:
            # an instance indexed under another object (re-sent with other bytes) keeps its row
            have = {r[0] for r in tx.conn.execute(select(dicom_instance.c.sop_uid)
                                                  .where(dicom_instance.c.sop_uid.in_(uids)))}
            records = [r for r in records if r.instance["sop_uid"] not in have]
            if records:
                studies = index.write_batch(tx.conn, records, replace=False)
                bridge_work.enqueue(tx.conn, studies)
        indexed += len(records)
    return indexed, unreadable


def recover(repo: Repository, store: Any, dicomweb_base: str,
            policy_for: Callable[[str], Any]) -> dict[str, int]:
    """Everything above, once, before the node listens; returns what it did."""
    t0 = time.monotonic()
    out = {"temps_removed": 0, "orphans_indexed": 0, "orphans_unreadable": 0, "studies_updated": 0}
    if isinstance(store, LocalBlobStore):
        out["temps_removed"] = remove_stray_temps(store)
        out["orphans_indexed"], out["orphans_unreadable"] = index_orphans(repo, store)
    else:  # an object store: no listing of every object at each start; a put that was never
        # indexed was never acknowledged, and its sender's retry finds the same key (idempotent)
        out["erasures_finished"] = finish_object_erasures(repo, store)
    due = bridge_work.due(repo, limit=100_000)
    if due:
        out["studies_updated"] = sum(bridge_work.process(repo, due, dicomweb_base, policy_for).values())
    if any(out.values()):
        log.warning("dicom: start-up recovery in %.1f s: %s", time.monotonic() - t0,
                    ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in out.items()))
    return out
