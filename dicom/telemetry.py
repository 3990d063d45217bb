"""What the DICOM node tells operators: counters for /metrics and one JSON log line per association
(calling AE, instances stored and failed, how it ended). Bound as extra event handlers and a
C-STORE wrapper, so the node's own handlers stay about DICOM."""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

import orjson

from fhirserver.metrics import count_dicom_association, count_dicom_instance

log = logging.getLogger("fhirserver.dicom.association")


def _tally(assoc: Any) -> dict[str, Any]:
    tally = getattr(assoc, "_fhir_tally", None)
    if tally is None:
        tally = {"stored": 0, "failed": 0, "statuses": {}, "t0": time.monotonic(), "done": False,
                 "lock": threading.Lock()}
        assoc._fhir_tally = tally
    return tally


def counted_store(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap the C-STORE handler: count the answer (success or a warning stored, else failed)."""

    @functools.wraps(handler)
    def _store(event: Any) -> Any:
        status = handler(event)
        code = int(getattr(status, "Status", status))  # a warning comes as a status Dataset
        ok = code == 0x0000 or 0xB000 <= code <= 0xBFFF  # warnings are stored (kept, flagged)
        tally = _tally(event.assoc)
        with tally["lock"]:
            tally["stored" if ok else "failed"] += 1
            if not ok:
                key = f"0x{code:04X}"
                tally["statuses"][key] = tally["statuses"].get(key, 0) + 1
        count_dicom_instance(ok)
        return status

    return _store


def _ended(event: Any, result: str, write_log: bool = True) -> None:
    tally = _tally(event.assoc)
    with tally["lock"]:
        if tally["done"]:
            return
        tally["done"] = True
    count_dicom_association(result)
    if write_log and log.isEnabledFor(logging.INFO):
        requestor = event.assoc.requestor
        log.info(orjson.dumps({
            "event": "dicom-association", "result": result,
            "calling_ae": (requestor.ae_title or "").strip(), "address": requestor.address,
            "stored": tally["stored"], "failed": tally["failed"], "failure_statuses": tally["statuses"],
            "duration_ms": round((time.monotonic() - tally["t0"]) * 1000, 1)}).decode())


def handlers(log_associations: bool = True) -> list[tuple[Any, Callable[[Any], None]]]:
    """Extra handlers for the node: associations accepted and released, aborted, or rejected."""
    from pynetdicom import evt

    on = log_associations
    return [
        (evt.EVT_ACCEPTED, lambda e: _tally(e.assoc)),
        (evt.EVT_RELEASED, lambda e: _ended(e, "released", on)),
        (evt.EVT_ABORTED, lambda e: _ended(e, "aborted", on)),
        (evt.EVT_REJECTED, lambda e: _ended(e, "rejected", on)),
    ]
