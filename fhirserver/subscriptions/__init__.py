"""Topic-based Subscriptions (Subscriptions R5 Backport IG 1.1.0, on R4).

- `install(repo, settings)`: the write hook that records events in the writer's transaction
  (the outbox) and keeps each Subscription's server state; called by `build_services`, so every
  process that writes (HTTP, DICOM node, DICOMweb, portal) records events alike.
- `register_jobs(jobs, repo, settings)`: the job kinds that dispatch events and deliver
  notifications (rest-hook) on the job queue (app factory); they run wherever job workers run
  (`serve`, `fhirserver worker`).
- `advertise(statement)`: the topics in the CapabilityStatement.
- `$status` and `$events` live in `fhirserver.subscriptions.operations` (the operations registry).
"""
from __future__ import annotations

from typing import Any

from fhirserver.subscriptions.outbox import make_write_hook
from fhirserver.subscriptions.spec import EXT, Spec, parse_spec
from fhirserver.subscriptions.topics import BY_URL, TOPICS, Topic
from fhirserver.subscriptions.delivery import register_jobs

TOPIC_CANONICAL_EXT = EXT + "capabilitystatement-subscriptiontopic-canonical"
OPERATIONS = {
    "status": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "events": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
}


def install(repo: Any, settings: Any, jobs: Any) -> None:
    """Hook the outbox into every write of this repository (once); its work goes on `jobs`."""
    if not any(getattr(h, "fhir_subscriptions", False) for h in repo.write_hooks):
        hook = make_write_hook(settings.fhir_base, jobs)
        hook.fhir_subscriptions = True  # type: ignore[attr-defined]
        repo.write_hooks.append(hook)


def advertise(statement: dict[str, Any]) -> dict[str, Any]:
    """The statement with each topic's canonical on the Subscription resource and its operations."""
    for rest in statement.get("rest", []):
        for res in rest.get("resource", []):
            if res.get("type") != "Subscription":
                continue
            res.setdefault("extension", []).extend(
                {"url": TOPIC_CANONICAL_EXT, "valueCanonical": t.url} for t in TOPICS)
            res["supportedProfile"] = [EXT + "backport-subscription"]
            ops = res.setdefault("operation", [])
            ops.extend({"name": n, "definition": u} for n, u in OPERATIONS.items())
    return statement


__all__ = ["BY_URL", "OPERATIONS", "Spec", "TOPICS", "TOPIC_CANONICAL_EXT", "Topic", "advertise", "register_jobs",
           "install", "parse_spec"]
