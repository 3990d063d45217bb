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

from fhirserver import requestid
from fhirserver.metrics import count_dicom_association, count_dicom_instance

log = logging.getLogger("fhirserver.dicom.association")

# What a C-STORE failure status tells the operator (PS3.4 B.2.3, PS3.7 C.4.2)
REASONS = {0xA700: "out of resources (file store or index could not take it)",
           0xA900: "data set does not match its SOP class or UIDs",
           0xC000: "cannot understand (unparsable data set)",
           0x0122: "SOP class not supported", 0x0124: "not authorized (study of a patient outside the node's access)",
           0x0110: "processing failure", 0x0211: "unrecognized operation"}


def reason_of(code: int) -> str:
    if 0xA700 <= code <= 0xA7FF:
        return REASONS[0xA700]
    if 0xA900 <= code <= 0xA9FF:
        return REASONS[0xA900]
    if 0xC000 <= code <= 0xCFFF:
        return REASONS[0xC000]
    return REASONS.get(code, "failure")


def reject_reason(assoc: Any) -> str:
    """Why the association was rejected, from the same checks pynetdicom's acceptor made."""
    try:
        rq = assoc.requestor
        calling = (rq.ae_title or "").strip()
        allowed = [t.strip() for t in assoc.ae.require_calling_aet]
        if allowed and calling not in allowed:
            return f"calling AE title {calling!r} is not registered (fhirserver dicom-node add)"
        if assoc.ae.require_called_aet and (getattr(rq.primitive, "called_ae_title", "") or "").strip() != \
                (assoc.acceptor.ae_title or "").strip():
            return "called AE title is not this node's"
        if len([a for a in assoc.ae.active_associations if a.is_acceptor]) > assoc.ae.maximum_associations:
            return "too many simultaneous associations"
    except Exception:  # noqa: BLE001 - a log line never fails the node
        pass
    return "rejected by the association negotiation (user identity or presentation contexts)"


def _tally(assoc: Any) -> dict[str, Any]:
    tally = getattr(assoc, "_fhir_tally", None)
    if tally is None:
        tally = {"stored": 0, "failed": 0, "warnings": 0, "statuses": {}, "warning_comments": [],
                 "t0": time.monotonic(), "done": False, "lock": threading.Lock(),
                 "id": requestid.accept_or_new(None)}
        assoc._fhir_tally = tally
    return tally


def _begin(assoc: Any) -> dict[str, Any]:
    """An association's id, bound in its own thread (pynetdicom runs each association's handlers
    in one thread), so the AuditEvents its handlers queue carry it like an HTTP request id."""
    tally = _tally(assoc)
    if threading.current_thread() is assoc:
        requestid.bind(tally["id"])
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
            if ok and code:  # kept, flagged: say what the warning was about
                tally["warnings"] += 1
                comment = str(getattr(status, "ErrorComment", "") or "")
                if comment and len(tally["warning_comments"]) < 5 and comment not in tally["warning_comments"]:
                    tally["warning_comments"].append(comment)
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
        line: dict[str, Any] = {
            "event": "dicom-association", "association_id": tally["id"], "result": result,
            "calling_ae": (requestor.ae_title or "").strip(), "address": requestor.address,
            "stored": tally["stored"], "failed": tally["failed"], "failure_statuses": tally["statuses"],
            "refused": [{"status": key, "count": n, "reason": reason_of(int(key, 16))}
                        for key, n in sorted(tally["statuses"].items())],
            "duration_ms": round((time.monotonic() - tally["t0"]) * 1000, 1)}
        if tally["warnings"]:
            line["stored_with_warning"] = tally["warnings"]
            line["warnings"] = tally["warning_comments"]
        if result == "rejected":
            line["reason"] = reject_reason(event.assoc)
        log.info(orjson.dumps(line).decode())


def handlers(log_associations: bool = True) -> list[tuple[Any, Callable[[Any], None]]]:
    """Extra handlers for the node: associations accepted and released, aborted, or rejected."""
    from pynetdicom import evt

    on = log_associations
    return [
        (evt.EVT_ACCEPTED, lambda e: _begin(e.assoc)),
        (evt.EVT_RELEASED, lambda e: _ended(e, "released", on)),
        (evt.EVT_ABORTED, lambda e: _ended(e, "aborted", on)),
        (evt.EVT_REJECTED, lambda e: _ended(e, "rejected", on)),
    ]
