"""The subscriptions' job kinds and how work is queued for them (in the caller's transaction)."""
from __future__ import annotations

from typing import Any

from fhirserver.access import SystemJob
from fhirserver.subscriptions.owner import JOB

AS = SystemJob(JOB)
DISPATCH_JOB, DELIVER_JOB, HEARTBEAT_JOB = "subscriptions.dispatch", "subscriptions.deliver", "subscriptions.heartbeat"


def enqueue_dispatch(jobs: Any, where: Any) -> None:
    jobs.enqueue(where, DISPATCH_JOB, {}, as_=AS, dedupe_key=DISPATCH_JOB)


def enqueue_delivery(jobs: Any, where: Any, sub_id: str, run_at_ms: int | None = None) -> None:
    jobs.enqueue(where, DELIVER_JOB, {"sub": sub_id}, as_=AS, run_at_ms=run_at_ms,
                 dedupe_key=f"{DELIVER_JOB}:{sub_id}")


def enqueue_heartbeat(jobs: Any, where: Any, sub_id: str, run_at_ms: int) -> None:
    jobs.enqueue(where, HEARTBEAT_JOB, {"sub": sub_id}, as_=AS, run_at_ms=run_at_ms,
                 dedupe_key=f"{HEARTBEAT_JOB}:{sub_id}")
