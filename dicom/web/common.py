"""What every DICOMweb handler shares: errors, the request's access policy, which studies it may
see, the instance rows of a study/series/instance, the base URL, and the per-request AuditEvent."""
from __future__ import annotations

import functools

import logging
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from flask import current_app, g, request
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from dicom.tables import dicom_instance, dicom_series, dicom_study
from fhirserver.api.outcome import FhirError

log = logging.getLogger("fhirserver.dicomweb")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_JSON = "application/dicom+json"


def error(status: int, message: str, code: str | None = None,
          headers: dict[str, str] | None = None) -> FhirError:
    """An error answer (rendered as an OperationOutcome by the app's error handler)."""
    code = code or {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                    406: "not-supported", 409: "conflict", 415: "not-supported"}.get(status, "processing")
    return FhirError(status, message, code, headers=headers)


def services() -> Any:
    return current_app.extensions["fhirserver"]


def base_url() -> str:
    """The DICOMweb base: `<server root URL>/dicomweb` (configured, never the request's Host)."""
    return services().root_url() + "/dicomweb"


def policy() -> Any:
    """The access policy of this request (set by smart_auth's before-request hook)."""
    from smart_auth import access_for_request

    return access_for_request()


def principal() -> Any:
    return getattr(g, "fhir_principal", None)


def check(interaction: str) -> Any:
    """403 unless the caller's scopes allow `interaction` on ImagingStudy; returns the policy."""
    pol = policy()
    pol.check_interaction(interaction, "ImagingStudy")
    return pol


def _chunks(seq: Sequence[str], n: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def visible_studies(conn: Connection, pol: Any, study_uids: Iterable[str]) -> set[str]:
    """The subset of `study_uids` whose ImagingStudy the policy lets the caller see."""
    from fhirserver.storage.tables import resource

    uids = sorted(set(study_uids))
    conds = list(pol.row_filter("ImagingStudy"))
    if not conds:
        return set(uids)
    out: set[str] = set()
    join = dicom_study.join(resource, and_(resource.c.res_type == "ImagingStudy",
                                           resource.c.res_id == dicom_study.c.imaging_study_id))
    for chunk in _chunks(uids):
        q = (select(dicom_study.c.study_uid).select_from(join)
             .where(dicom_study.c.study_uid.in_(list(chunk)), resource.c.deleted.is_(False), *conds))
        out.update(conn.execute(q).scalars())
    return out


_ROWS_TTL = 1.0
_rows_cache: dict[tuple[str, str | None, str | None], tuple[float, list[Any]]] = {}


def rows_for(pol: Any, study: str, series: str | None = None, sop: str | None = None) -> list[Any]:
    """`instance_rows` without a database connection when the cache and the policy allow."""
    hit = _rows_cache.get((study, series, sop))
    if hit is not None and time.monotonic() - hit[0] < _ROWS_TTL and not list(pol.row_filter("ImagingStudy")):
        return hit[1]
    with services().repo.engine.connect() as conn:
        return instance_rows(conn, pol, study, series, sop)


def forget_rows() -> None:
    _rows_cache.clear()


def instance_rows(conn: Connection, pol: Any, study: str, series: str | None = None,
                  sop: str | None = None) -> list[Any]:
    """The instances addressed by a WADO path, ordered; 404 when none, or none the caller may see.

    The index lookup of one path is reused for a second (a viewer fetches the same instances
    again and again); who may see the study is checked on every request."""
    key = (study, series, sop)
    hit = _rows_cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _ROWS_TTL:
        rows = hit[1]
    else:
        rows = _query_rows(conn, study, series, sop)
        if len(_rows_cache) > 4096:
            _rows_cache.clear()
        if rows:
            _rows_cache[key] = (now, rows)
    what = "instance" if sop else "series" if series else "study"
    if not rows or not visible_studies(conn, pol, [study]):
        raise error(404, f"No {what} with that UID ({sop or series or study})")
    return rows


def _query_rows(conn: Connection, study: str, series: str | None, sop: str | None) -> list[Any]:
    q = select(dicom_instance).where(dicom_instance.c.study_uid == study)
    if series is not None:
        q = q.where(dicom_instance.c.series_uid == series)
    if sop is not None:
        q = q.where(dicom_instance.c.sop_uid == sop)
    q = q.outerjoin(dicom_series, dicom_series.c.series_uid == dicom_instance.c.series_uid).order_by(
        dicom_series.c.series_number, dicom_instance.c.series_uid, dicom_instance.c.instance_number,
        dicom_instance.c.sop_uid)
    return conn.execute(q).all()


def instance_url(row: Any) -> str:
    return f"{base_url()}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"


# -- audit ------------------------------------------------------------------------------------
_EVENTS = {  # DICOM audit event ids (PS3.15 A.5)
    "query": ("110112", "Query", "E"),
    "retrieve": ("110106", "Export", "R"),
    "store": ("110107", "Import", "C"),
}


def audit(kind: str, study_uids: Iterable[str], detail: str, outcome: str = "0") -> None:
    """One AuditEvent for this request. Built from the request here; looked up and written by the
    process's audit writer, many per transaction, so a retrieval does not wait for a database
    write (a few hundred ms of events can be lost if the process is killed; flushed at exit)."""
    p = principal()
    info = {
        "kind": kind, "uids": sorted(set(study_uids))[:50], "detail": detail, "outcome": outcome,
        "client": getattr(p, "client_id", None), "user": getattr(p, "fhir_user", None),
        "remote": request.remote_addr or "unknown", "what": f"{request.method} {request.path}"[:200],
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    services().audit.defer(functools.partial(_build_events, info))


def flush_audits(*apps: Any) -> None:
    """Write the queued AuditEvents of these apps (default: the current app) now."""
    for app in apps or (current_app,):
        app.extensions["fhirserver"].audit.flush()


def _event(info: dict[str, Any], refs: list[tuple[str, str | None, str | None]]) -> dict[str, Any]:
    code, display, action = _EVENTS[info["kind"]]
    who: dict[str, Any] = ({"identifier": {"system": "urn:fhirserver:oauth-client", "value": info["client"]}}
                           if info["client"] else {"display": "anonymous (insecure-no-auth)"})
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": who, "requestor": not info["user"],
        "network": {"address": info["remote"], "type": "2"},
    }]
    if info["user"]:
        agents.append({"who": {"reference": info["user"]}, "requestor": True})
    entities: list[dict[str, Any]] = []
    patients: set[str] = set()
    for uid, is_id, pat in refs:
        ident = {"system": "urn:dicom:uid", "value": "urn:oid:" + uid}
        entities.append({"what": {"reference": f"ImagingStudy/{is_id}", "identifier": ident} if is_id
                         else {"identifier": ident},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3"}})
        if pat:
            patients.add(pat)
    for pat in sorted(patients):
        entities.append({"what": {"reference": f"Patient/{pat}"},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}})
    entities.append({"what": {"display": info["what"]}, "description": info["detail"][:1000]})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": "urn:fhirserver:audit", "code": "dicomweb", "display": "DICOMweb"}],
        "action": action, "recorded": info["recorded"], "outcome": info["outcome"], "agent": agents,
        "source": {"observer": {"display": "fhirserver DICOMweb"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4"}]},
        "entity": entities,
    }


def _build_events(info: dict[str, Any], tx: Any) -> list[dict[str, Any]]:
    """Runs in the audit writer's transaction: resolve study UIDs, then build the event."""
    refs: dict[str, tuple[str, str | None, str | None]] = {}
    for chunk in _chunks(sorted(set(info["uids"]))):
        for r in tx.conn.execute(select(dicom_study.c.study_uid, dicom_study.c.imaging_study_id,
                                        dicom_study.c.patient_res_id)
                                 .where(dicom_study.c.study_uid.in_(list(chunk)))):
            refs[r[0]] = (r[0], r[1], r[2])
    return [_event(info, [refs.get(u, (u, None, None)) for u in info["uids"]])]

