"""ImagingStudy bridge: after an association, each touched study gets its ImagingStudy created or
updated through the repository, linked to the matched (or a new, unreconciled) Patient, the
DICOMweb Endpoint and the ServiceRequest whose accession matches.

"Never two ImagingStudies for one study UID": the `dicom_study` row (unique on the UID) is
locked for the whole update (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite write transactions
are serialised by BEGIN IMMEDIATE), and it holds the ImagingStudy id.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select, text, update

from dicom.fhir import has_identifier, ref_id, search
from dicom.index import study_summary
from dicom.tables import dicom_study
from fhirserver.access import organization_of
from fhirserver.model import loads, validate_resource
from fhirserver.storage import Repository, Tx, now_utc

log = logging.getLogger("fhirserver.dicom")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TAG_SYSTEM = "http://fhirserver.local/CodeSystem/tags"
UNRECONCILED = {"system": TAG_SYSTEM, "code": "unreconciled",
                "display": "Created from DICOM demographics; to be merged into the real patient"}
PATIENT_ID_SYSTEM = "urn:dicom:patient-id"
ENDPOINT_ID = "dicomweb"


def identifier_system(issuer: str | None) -> str | None:
    """Patient.identifier.system for an IssuerOfPatientID (None: any system matches)."""
    if not issuer:
        return None
    if issuer.startswith(("urn:", "http://", "https://")):
        return issuer
    if all(part.isascii() and part.isdigit() for part in issuer.split(".")) and "." in issuer:
        return "urn:oid:" + issuer
    return f"urn:dicom:issuer:{issuer}"


def _fhir_date(da: str | None) -> str | None:
    if not da or len(da) < 8 or not (da[:8].isascii() and da[:8].isdigit()):
        return None
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}"


def _fhir_datetime(da: str | None, tm: str | None) -> str | None:
    date = _fhir_date(da)
    if not date:
        return None
    digits = (tm or "").replace(":", "").split(".")[0]
    if len(digits) < 4 or not (digits.isascii() and digits.isdigit()):
        return date
    hh, mm, ss = digits[0:2], digits[2:4], (digits[4:6] or "00")
    try:
        local = datetime(int(date[:4]), int(date[5:7]), int(date[8:10]), int(hh), int(mm), int(ss))
    except ValueError:
        return date
    return local.astimezone().isoformat(timespec="seconds")  # the node's local zone


def _human_name(pn: str | None) -> list[dict[str, Any]]:
    if not pn:
        return []
    alpha = pn.split("=")[0]
    parts = (alpha.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    name: dict[str, Any] = {"text": " ".join(p for p in (prefix, given, middle, family, suffix) if p)}
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return [name] if name["text"] else []


def _pg_lock(tx: Tx, key: str) -> None:
    if tx.postgres:
        n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        tx.conn.execute(text("SELECT pg_advisory_xact_lock(:n)"), {"n": n})


def match_patient(tx: Tx, study: Any, policy: Any) -> str:
    """The id of the Patient for the study's PatientID/issuer among the Patients the sender's
    `policy` lets it see (a clinic's modality matches that clinic's patients only: another
    clinic may use the same PatientID for someone else), else (or when it matches several) the
    unreconciled one waiting for it, else a new unreconciled one. A sender
    bound to one organization makes the new Patient that organization's (managingOrganization),
    so its staff see it in their reconciliation list and its next scans match it."""
    pid, issuer = study.patient_id, study.issuer
    system = identifier_system(issuer)
    org = organization_of(policy)
    if pid:
        _pg_lock(tx, f"dicom-patient|{issuer or ''}|{pid}")
        token = f"{system}|{pid}" if system else pid
        found = list(search(tx, "Patient", [("identifier", token)],
                            lambda b: has_identifier(b, pid, system), limit=10, policy=policy))
        # a merged Patient's scans go to the patient it was merged into (its `replaced-by` link)
        found = list({i: (i, b) for i, b in (surviving(tx, i, b, policy) for i, b in found)}.values())
        reconciled = [f for f in found if not _is_unreconciled(f[1])]
        if len(reconciled) == 1:
            return reconciled[0][0]
        if len(reconciled) > 1:  # two people with this PatientID (e.g. two clinics): never guess
            log.warning("dicom: PatientID %s matches %d patients; the study waits for reconciliation",
                        pid, len(reconciled))
        waiting = [f for f in found if _is_unreconciled(f[1])]
        if waiting:
            return waiting[0][0]
    body: dict[str, Any] = {"resourceType": "Patient", "meta": {"tag": [UNRECONCILED]}}
    if org:
        body["managingOrganization"] = {"reference": f"Organization/{org}"}
    if pid:
        ident: dict[str, Any] = {"system": system or PATIENT_ID_SYSTEM, "value": pid}
        if issuer:
            ident["assigner"] = {"display": issuer}
        body["identifier"] = [ident]
    name = _human_name(study.patient_name)
    if name:
        body["name"] = name
    sex = {"M": "male", "F": "female", "O": "other"}.get((study.sex or "").upper())
    if sex:
        body["gender"] = sex
    birth = _fhir_date(study.birth_date)
    if birth:
        body["birthDate"] = birth
    validate_resource(body)
    return tx.create("Patient", body).res_id


def surviving(tx: Tx, pid: str, body: dict[str, Any], policy: Any, hops: int = 5) -> tuple[str, dict[str, Any]]:
    """The Patient that `pid` was merged into (following `replaced-by` links the sender may
    see, a few hops at most), else `pid` itself."""
    where = list(policy.row_filter("Patient"))
    for _hop in range(hops):
        nxt = next((ref_id(link.get("other"), "Patient") for link in body.get("link") or []
                    if link.get("type") == "replaced-by"), None)
        cur = tx.current("Patient", nxt, where=where) if nxt else None
        if cur is None or cur.deleted or cur.body is None:
            break
        pid, body = nxt, loads(cur.body)
    return pid, body


def order_patient(tx: Tx, sr: tuple[str, dict] | None, policy: Any) -> str | None:
    """The Patient a scan ticket (ServiceRequest) was made for, when the sender may see it: the
    worklist gave the modality that order, so its study is that patient's whatever PatientID
    the worklist item carried."""
    pid = ref_id((sr[1] if sr else {}).get("subject"), "Patient")
    if not pid:
        return None
    cur = tx.current("Patient", pid, where=list(policy.row_filter("Patient")))
    return pid if cur is not None and not cur.deleted else None


def complete_order(tx: Tx, sr: tuple[str, dict], policy: Any) -> None:
    """The scan ticket is done once a study with its accession arrived: it leaves the worklist."""
    sr_id = sr[0]
    cur = tx.current("ServiceRequest", sr_id, for_update=True, where=list(policy.row_filter("ServiceRequest")))
    if cur is None or cur.deleted or cur.body is None:
        return
    body = loads(cur.body)
    if body.get("status") != "active":
        return
    body = {k: v for k, v in body.items() if k not in ("meta", "id")}
    body["status"] = "completed"
    validate_resource(body)
    tx.update("ServiceRequest", sr_id, body)


def _is_unreconciled(body: dict[str, Any]) -> bool:
    return any(t.get("code") == "unreconciled" and t.get("system") == TAG_SYSTEM
               for t in (body.get("meta") or {}).get("tag") or [])


def ensure_endpoint(tx: Tx, dicomweb_base: str) -> str:
    cur = tx.current("Endpoint", ENDPOINT_ID)
    if cur is not None and not cur.deleted:
        return ENDPOINT_ID
    body = {
        "resourceType": "Endpoint", "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs"},
        "name": "DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_base,
    }
    validate_resource(body)
    tx.update("Endpoint", ENDPOINT_ID, body)
    return ENDPOINT_ID


def find_service_request(tx: Tx, accession: str | None, policy: Any) -> tuple[str, dict] | None:
    """The order the scan fulfils: a ServiceRequest with its accession the sender may see."""
    if not accession:
        return None
    for rid, body in search(tx, "ServiceRequest", [("identifier", accession)],
                            lambda b: has_identifier(b, accession), limit=5, policy=policy):
        return rid, body
    return None


def complete_appointments(tx: Tx, sr_id: str, policy: Any) -> None:
    """Appointments based on the ServiceRequest (that the sender may see) are fulfilled by the
    arriving study."""
    ref = f"ServiceRequest/{sr_id}"
    for aid, body in list(search(tx, "Appointment", [("based-on", ref)],
                                 lambda b: any(ref_id(r, "ServiceRequest") == sr_id
                                               for r in b.get("basedOn") or []), limit=50, policy=policy)):
        if body.get("status") in ("fulfilled", "cancelled", "entered-in-error", "noshow"):
            continue
        body = {k: v for k, v in body.items() if k not in ("meta", "id")}
        body["status"] = "fulfilled"
        validate_resource(body)
        tx.update("Appointment", aid, body)


INCOMPLETE_URL = "http://fhirserver.local/StructureDefinition/dicom-instance-incomplete"


def flag_incomplete(item: dict[str, Any], problem: str | None) -> None:
    """Mark an instance received with its pixel data cut short or missing, where staff look:
    its title in viewers and lists, and an extension that says why for software."""
    if problem:
        item["title"] = f"INCOMPLETE: {problem}"
        item["extension"] = [{"url": INCOMPLETE_URL, "valueString": problem}]


def build_imaging_study(study: Any, series: list[Any], instances: list[Any], patient_id: str,
                        endpoint_id: str, sr: tuple[str, dict] | None) -> dict[str, Any]:
    by_series: dict[str, list[Any]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_uid, []).append(inst)
    modalities: list[str] = []
    out_series = []
    for s in series:
        insts = by_series.get(s.series_uid, [])
        if not insts:
            continue
        entry: dict[str, Any] = {"uid": s.series_uid}
        if s.series_number is not None:
            entry["number"] = s.series_number
        entry["modality"] = {"system": DCM, "code": s.modality or "OT"}
        if s.modality and s.modality not in modalities:
            modalities.append(s.modality)
        if s.description:
            entry["description"] = s.description
        entry["numberOfInstances"] = len(insts)
        if s.body_part:
            entry["bodySite"] = {"display": s.body_part}
        started = _fhir_datetime(s.series_date, s.series_time)
        if started:
            entry["started"] = started
        entry["instance"] = []
        for i in insts:
            item: dict[str, Any] = {"uid": i.sop_uid,
                                    "sopClass": {"system": "urn:ietf:rfc:3986",
                                                 "code": "urn:oid:" + i.sop_class_uid}}
            if i.instance_number is not None:
                item["number"] = i.instance_number
            flag_incomplete(item, getattr(i, "incomplete", None))
            entry["instance"].append(item)
        out_series.append(entry)
    body: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"use": "official", "system": "urn:dicom:uid",
                        "value": "urn:oid:" + study.study_uid}],
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if study.accession:
        body["identifier"].append({"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                                   "value": study.accession})
    started = _fhir_datetime(study.study_date, study.study_time)
    if started:
        body["started"] = started
    if sr:
        body["basedOn"] = [{"reference": f"ServiceRequest/{sr[0]}"}]
    referrer = " ".join((study.referring_physician or "").split("=")[0].replace("^", " ").split())
    if referrer:
        body["referrer"] = {"display": referrer}
    if modalities:
        body["modality"] = [{"system": DCM, "code": m} for m in modalities]
    body["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
    body["numberOfSeries"] = len(out_series)
    body["numberOfInstances"] = sum(e["numberOfInstances"] for e in out_series)
    if study.description:
        body["description"] = study.description
    body["series"] = out_series
    return body


def update_study(repo: Repository, study_uid: str, dicomweb_base: str, policy: Any) -> str | None:
    """Create or update the ImagingStudy of one study; returns its id. `policy` is the sender's
    (the calling node's, the STOW client's): what it may see is what the study may be linked to."""
    with repo.transaction(write=True) as tx:
        q = select(dicom_study).where(dicom_study.c.study_uid == study_uid)
        if tx.postgres:
            q = q.with_for_update()
        study = tx.conn.execute(q).first()
        if study is None:
            return None
        series, instances = study_summary(tx.conn, study_uid)
        if not instances:
            return study.imaging_study_id
        patient_id = study.patient_res_id
        if patient_id:
            cur = tx.current("Patient", patient_id)
            if cur is None or cur.deleted:
                patient_id = None
        sr = find_service_request(tx, study.accession, policy)
        patient_id = patient_id or order_patient(tx, sr, policy) or match_patient(tx, study, policy)
        endpoint_id = ensure_endpoint(tx, dicomweb_base)
        body = build_imaging_study(study, series, instances, patient_id, endpoint_id, sr)
        validate_resource(body)
        is_id = study.imaging_study_id
        existing = tx.current("ImagingStudy", is_id, for_update=True) if is_id else None
        if existing is not None and not existing.deleted:
            from fhirserver.model import loads

            old = loads(existing.body)
            # keep what staff changed on the FHIR side: the subject after a merge, notes
            if old.get("subject"):
                body["subject"] = old["subject"]
            for keep in ("note", "procedureCode", "reasonCode", "encounter", "location"):
                if keep in old:
                    body[keep] = old[keep]
            tx.update("ImagingStudy", is_id, body)
        else:
            is_id = tx.create("ImagingStudy", body).res_id
        if sr:
            complete_appointments(tx, sr[0], policy)
            complete_order(tx, sr, policy)
        tx.conn.execute(update(dicom_study).where(dicom_study.c.pk == study.pk).values(
            imaging_study_id=is_id, patient_res_id=patient_id,
            modalities="\\".join(sorted({s.modality for s in series if s.modality})) or None,
            num_series=body["numberOfSeries"], num_instances=body["numberOfInstances"],
            updated=now_utc()))
        return is_id


TRANSIENT_ATTEMPTS = 3


def update_studies(repo: Repository, study_uids: Iterable[str], dicomweb_base: str,
                   policy: Any) -> dict[str, str | None]:
    """The ImagingStudy id of each study, None where it could not be made. A transient database
    failure (deadlock, serialization failure, a dropped or refused connection) is retried: the
    update is idempotent. What still fails is logged and answered as None, so that the caller
    (STOW) can tell its client instead of acknowledging a study nobody can find on the FHIR side."""
    from sqlalchemy.exc import OperationalError

    out: dict[str, str | None] = {}
    for uid in sorted(set(study_uids)):
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                out[uid] = update_study(repo, uid, dicomweb_base, policy)
                break
            except OperationalError:
                if attempt == TRANSIENT_ATTEMPTS:
                    log.exception("dicom: ImagingStudy update failed for study %s", uid)
                    out[uid] = None
                else:
                    log.warning("dicom: ImagingStudy update of study %s: transient database error, retrying", uid)
                    time.sleep(0.1 * attempt)
            except Exception:  # one bad study must not block the others
                log.exception("dicom: ImagingStudy update failed for study %s", uid)
                out[uid] = None
                break
    return out
