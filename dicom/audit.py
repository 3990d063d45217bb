"""AuditEvents of the DICOM entry points (DIMSE and DICOMweb), in the DICOM audit vocabulary
(PS3.15 A.5), written by the one audit writer of the process (`fhirserver.audit.AuditTrail`).

The entry point queues a small record; the writer, in its own transaction, looks up what each
Study Instance UID stands for (ImagingStudy, Patient) and writes the event, so a C-FIND or a
WADO retrieval never waits for a database write."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from sqlalchemy import bindparam, select

from dicom.tables import dicom_study

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
MAX_UIDS = 50
EVENTS = {  # DICOM audit event ids (PS3.15 A.5)
    "query": ("110112", "Query", "E"),
    "retrieve": ("110106", "Export", "R"),
    "store": ("110107", "Import", "C"),
}
CHANNELS = {"dicomweb": "DICOMweb", "dimse": "DICOM DIMSE"}


def event_info(kind: str, study_uids: Iterable[str], detail: str, *, channel: str, client: str | None,
               user: str | None, remote: str, what: str, outcome: str = "0",
               references: Iterable[str] = ()) -> dict[str, Any]:
    """What one access was: `kind` query|retrieve|store, the studies it touched, who (an OAuth
    client or a DICOM node's principal, and its user), from where, and `references` to other
    resources it disclosed (e.g. the worklist's ServiceRequests and Patients)."""
    if kind not in EVENTS or channel not in CHANNELS:
        raise ValueError(f"unknown DICOM audit kind/channel {kind!r}/{channel!r}")
    return {
        "kind": kind, "uids": sorted(set(study_uids))[:MAX_UIDS], "detail": detail, "outcome": outcome,
        "channel": channel, "client": client, "user": user, "remote": remote or "unknown",
        "what": what[:200], "refs": list(dict.fromkeys(r for r in references if r))[:MAX_UIDS],
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def queue(trail: Any, info: dict[str, Any]) -> None:
    """Hand the record to the audit writer (`AuditTrail.defer_batch`: the study lookups of
    all the records of one flush are one statement)."""
    trail.defer_batch(build_many, info)


def _chunks(seq: Sequence[str], n: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _studies(tx: Any, uids: set[str]) -> dict[str, tuple[str, str | None, str | None]]:
    """(UID, ImagingStudy id, Patient id) of the stored studies among `uids`."""
    refs: dict[str, tuple[str, str | None, str | None]] = {}
    for chunk in _chunks(sorted(uids)):
        for r in tx.conn.execute(_STUDIES, {"uids": list(chunk)}):
            refs[r[0]] = (r[0], r[1], r[2])
    return refs


# built once (a memo): the writer's lookup of a batch's studies
_STUDIES = select(dicom_study.c.study_uid, dicom_study.c.imaging_study_id, dicom_study.c.patient_res_id).where(
    dicom_study.c.study_uid.in_(bindparam("uids", expanding=True)))


def build_events(info: dict[str, Any], tx: Any) -> list[dict[str, Any]]:
    """Runs in the audit writer's transaction: resolve study UIDs, then build the event."""
    return build_many([info], tx)[0]


def build_many(infos: list[dict[str, Any]], tx: Any) -> list[list[dict[str, Any]]]:
    """`build_events` of several records, with one lookup of all their studies."""
    refs = _studies(tx, {u for info in infos for u in info["uids"]})
    return [[event(info, [refs.get(u, (u, None, None)) for u in info["uids"]])] for info in infos]


def _patient_entity(pat: str) -> dict[str, Any]:
    return {"what": {"reference": f"Patient/{pat}"},
            "type": {"system": _ENTITY_TYPE, "code": "1"}, "role": {"system": _OBJECT_ROLE, "code": "1"}}


def event(info: dict[str, Any], studies: list[tuple[str, str | None, str | None]]) -> dict[str, Any]:
    """The AuditEvent body: the studies (ImagingStudy and UID), their patients, the other
    disclosed resources, and the request."""
    code, display, action = EVENTS[info["kind"]]
    channel = info.get("channel", "dicomweb")
    who: dict[str, Any] = ({"identifier": {"system": "urn:fhirserver:oauth-client", "value": info["client"]}}
                           if info["client"] else {"display": "anonymous (insecure-no-auth)"})
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": who, "requestor": not info["user"],
        "network": {"address": info["remote"], "type": "2"},
    }]
    if info["client"]:
        agents[0]["altId"] = info["client"]
    if info["user"]:
        agents.append({"who": {"reference": info["user"]}, "requestor": True})
    entities: list[dict[str, Any]] = []
    patients: set[str] = set()
    for uid, is_id, pat in studies:
        ident = {"system": "urn:dicom:uid", "value": "urn:oid:" + uid}
        entities.append({"what": {"reference": f"ImagingStudy/{is_id}", "identifier": ident} if is_id
                         else {"identifier": ident},
                         "type": {"system": _ENTITY_TYPE, "code": "2"},
                         "role": {"system": _OBJECT_ROLE, "code": "3"}})
        if pat:
            patients.add(pat)
    others = []
    for ref in info.get("refs") or []:
        res_type, _, res_id = ref.partition("/")
        if res_type == "Patient" and res_id:
            patients.add(res_id)
        else:
            others.append({"what": {"reference": ref}, "type": {"system": _ENTITY_TYPE, "code": "2"}})
    entities += [_patient_entity(p) for p in sorted(patients)] + others
    entities.append({"what": {"display": info["what"]}, "description": info["detail"][:1000]})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": "urn:fhirserver:audit", "code": channel, "display": CHANNELS[channel]}],
        "action": action, "recorded": info["recorded"], "outcome": info["outcome"], "agent": agents,
        "source": {"observer": {"display": f"fhirserver {CHANNELS[channel]}"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4"}]},
        "entity": entities,
    }


__all__ = ["EVENTS", "build_events", "build_many", "event", "event_info", "queue"]
