"""`/healthz` (the process answers) and `/readyz` (it can do its work), for load balancers and
orchestrators. Both are open: they reveal no data, and a probe carries no token.

Readiness checks what every request needs: the database answers, the data folder takes a write,
the blob store of DICOM instances and exports (the data folder, or the object store) takes one, and the job tables (notify outbox) can be read. A failed
check answers 503 with an OperationOutcome naming it, so the operator reads the cause in the probe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import orjson
from flask import Blueprint, Response, current_app

from fhirserver.blobs import write_probe
from fhirserver.storage import ping, readable_tables

# Tables of queued work, checked when this deployment has them.
JOB_TABLES = ("notify_outbox", "job")


def _json(status: int, body: dict[str, Any], mime: str = "application/json") -> Response:
    resp = Response(orjson.dumps(body), status=status, content_type=mime)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def check_database(services: Any) -> str:
    ping(services.repo.engine)
    return "ok"


def check_data_dir(services: Any) -> str:
    """Write and remove a file in the data folder and in the local blob store (if made)."""
    root = Path(services.settings.data_dir)
    root.mkdir(parents=True, exist_ok=True)  # a fresh install has none yet; failing here is the finding
    for folder in (root, root / "dicom"):
        if folder is root or folder.exists():
            write_probe(folder)
    return "ok"


def check_blob_store(services: Any) -> str:
    """The object store (when `--blob-url` names one) answers and takes a write: without it no
    scan can be stored or shown. The local store is the data folder, checked above."""
    if not services.settings.blob_url:
        return "data_dir"
    return services.blobs.check()


def check_jobs(services: Any) -> str:
    return "ok" if readable_tables(services.repo.engine, JOB_TABLES) else "absent"


CHECKS: dict[str, Callable[[Any], str]] = {
    "database": check_database, "data_dir": check_data_dir, "blob_store": check_blob_store, "jobs": check_jobs,
}


def readiness(services: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Run every check: (results by name, failures by name with their one-line reason)."""
    results: dict[str, str] = {}
    failures: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name == "jobs" and "database" in failures:
            results[name] = "skipped"
            continue
        try:
            results[name] = check(services)
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready", with its reason
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            results[name] = "fail"
            failures[name] = f"{type(exc).__name__}: {reason}"
    return results, failures


def blueprint() -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def _healthz() -> Response:
        return _json(200, {"status": "ok"})

    @bp.get("/readyz")
    def _readyz() -> Response:
        results, failures = readiness(current_app.extensions["fhirserver"])
        if not failures:
            services = current_app.extensions["fhirserver"]
            body: dict[str, Any] = {"status": "ok", "checks": results}
            try:  # waiting or running jobs by kind: a backlog shows here before users notice it
                body["queue"] = services.jobs.depth()
            except Exception:  # noqa: BLE001 - the jobs check above already said the tables read
                pass
            return _json(200, body)
        return _json(503, {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "transient", "details": {"text": f"{name} not ready"},
                       "diagnostics": f"{name}: {reason}", "expression": [name]}
                      for name, reason in failures.items()],
        }, "application/fhir+json")

    return bp
