"""Modality Worklist: scheduled procedures from ServiceRequest (+ its Appointments), as C-FIND
MWL items. A ServiceRequest is scheduled while it is active and not all its Appointments are over.

Mapping: accession = the ServiceRequest identifier typed ACSN (else its first identifier, else
its id); station AE = an Appointment participant's (or ServiceRequest performer's) logical
identifier with system `urn:dicom:ae`; modality = a DICOM (DCM) code in ServiceRequest.code,
.category or Appointment.serviceType; start = Appointment.start (else occurrence[x]).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Iterator

from pydicom.dataset import Dataset

from dicom.bridge import DCM, V2_0203
from dicom.fhir import ref_id, search
from dicom.query import match_dataset, response_for
from fhirserver.model import loads
from fhirserver.storage import Repository, Tx

AE_SYSTEM = "urn:dicom:ae"
OPEN_APPOINTMENT = {"proposed", "pending", "booked", "arrived", "checked-in", "waitlist"}


def study_uid_for(sr_id: str) -> str:
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, f"ServiceRequest/{sr_id}").int)


def _pn(body: dict[str, Any] | None) -> str:
    for name in (body or {}).get("name") or []:
        family = name.get("family", "")
        given = name.get("given") or []
        return "^".join([family, " ".join(given[:1]), " ".join(given[1:])]).rstrip("^")
    return ""


def _da_tm(value: str | None) -> tuple[str, str]:
    if not value:
        return "", ""
    if len(value) <= 10:
        return value.replace("-", ""), ""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:10].replace("-", ""), ""
    if t.tzinfo is not None:
        t = t.astimezone()  # the modality works in the node's local time
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def _codes(concepts: list[dict[str, Any]] | None, system: str) -> list[str]:
    out = []
    for concept in concepts or []:
        for c in concept.get("coding") or []:
            if c.get("system") == system and c.get("code"):
                out.append(c["code"])
    return out


def _text(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    for c in concept.get("coding") or []:
        if c.get("display"):
            return c["display"]
        if c.get("code"):
            return c["code"]
    return ""


def _ae_of(refs: list[dict[str, Any]]) -> str:
    for r in refs:
        ident = (r or {}).get("identifier") or {}
        if ident.get("system") == AE_SYSTEM and ident.get("value"):
            return ident["value"][:16]
    return ""


def accession_of(sr_id: str, sr: dict[str, Any]) -> str:
    idents = sr.get("identifier") or []
    for ident in idents:
        if any(c.get("code") == "ACSN" for c in (ident.get("type") or {}).get("coding") or []):
            return ident.get("value", "")[:16]
    for ident in idents:
        if ident.get("value"):
            return ident["value"][:16]
    return sr_id[:16]


def _patient_id(pid: str, patient: dict[str, Any] | None) -> tuple[str, str]:
    for ident in (patient or {}).get("identifier") or []:
        if ident.get("value"):
            system = ident.get("system") or ""
            issuer = system[len("urn:dicom:issuer:"):] if system.startswith("urn:dicom:issuer:") \
                else system[len("urn:oid:"):] if system.startswith("urn:oid:") else ""
            return ident["value"][:64], issuer
    return pid[:64], ""


def items(tx: Tx, policy: Any) -> Iterator[dict[str, Any]]:
    """The scheduled procedures the caller's `policy` lets it see: a clinic's modality gets its
    clinic's orders, for its clinic's patients, never another's."""
    appointments: dict[str, list[dict[str, Any]]] = {}
    for _aid, appt in search(tx, "Appointment", [], lambda b: bool(b.get("basedOn")), limit=100000,
                             policy=policy):
        for r in appt.get("basedOn") or []:
            sr_id = ref_id(r, "ServiceRequest")
            if sr_id:
                appointments.setdefault(sr_id, []).append(appt)
    patient_access = list(policy.row_filter("Patient"))
    for sr_id, sr in search(tx, "ServiceRequest", [("status", "active")],
                            lambda b: b.get("status") == "active", limit=100000, policy=policy):
        appts = appointments.get(sr_id, [])
        open_appts = [a for a in appts if a.get("status") in OPEN_APPOINTMENT]
        if appts and not open_appts:
            continue  # done (fulfilled by an arriving study) or cancelled
        appt = min(open_appts, key=lambda a: a.get("start") or "") if open_appts else {}
        patient_ref = ref_id(sr.get("subject"), "Patient")
        patient = None
        if patient_ref:
            cur = tx.current("Patient", patient_ref, where=patient_access)
            patient = loads(cur.body) if cur is not None and not cur.deleted else None
        pid, issuer = _patient_id(patient_ref or "", patient)
        start = appt.get("start") or sr.get("occurrenceDateTime") or \
            (sr.get("occurrencePeriod") or {}).get("start")
        da, tm = _da_tm(start)
        modalities = (_codes([sr.get("code") or {}], DCM) + _codes(sr.get("category"), DCM)
                      + _codes(appt.get("serviceType"), DCM))
        station = _ae_of([p.get("actor") for p in appt.get("participant") or []]
                         + list(sr.get("performer") or []))
        description = _text(sr.get("code")) or _text((appt.get("serviceType") or [None])[0]) \
            or appt.get("description", "")
        gender = {"male": "M", "female": "F", "other": "O"}.get((patient or {}).get("gender", ""), "")
        step = {
            "Modality": modalities[0] if modalities else "OT",
            "ScheduledStationAETitle": station,
            "ScheduledProcedureStepStartDate": da,
            "ScheduledProcedureStepStartTime": tm,
            "ScheduledProcedureStepDescription": description[:64],
            "ScheduledProcedureStepID": sr_id[:16],
            "ScheduledPerformingPhysicianName": "",
            "ScheduledProcedureStepStatus": "SCHEDULED",
        }
        yield {
            "_refs": [f"ServiceRequest/{sr_id}"] + ([f"Patient/{patient_ref}"] if patient is not None else []),
            "PatientName": _pn(patient),
            "PatientID": pid,
            "IssuerOfPatientID": issuer,
            "PatientBirthDate": ((patient or {}).get("birthDate") or "").replace("-", ""),
            "PatientSex": gender,
            "AccessionNumber": accession_of(sr_id, sr),
            "RequestedProcedureID": sr_id[:16],
            "RequestedProcedureDescription": description[:64],
            "StudyInstanceUID": study_uid_for(sr_id),
            "ReferringPhysicianName": ((sr.get("requester") or {}).get("display") or "").replace(" ", "^"),
            "ScheduledProcedureStepSequence": [step],
        }


def find(repo: Repository, query: Dataset, policy: Any,
         disclosed: list[str] | None = None) -> list[Dataset]:
    """C-FIND MWL: the matching worklist items the caller may see; the ServiceRequests and
    Patients answered are appended to `disclosed` (for the AuditEvent)."""
    with repo.transaction() as tx:
        out = []
        for item in items(tx, policy):
            if match_dataset(item, query):
                out.append(response_for(item, query, {"SpecificCharacterSet": "ISO_IR 192"}))
                if disclosed is not None:
                    disclosed.extend(item["_refs"])
        return out


__all__ = ["find", "items", "study_uid_for", "accession_of", "AE_SYSTEM", "V2_0203"]
