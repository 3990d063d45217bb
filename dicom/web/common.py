"""What every DICOMweb handler shares: errors, the request's access policy (which studies it may
see is the access gate's answer, `dicom.access.visible_only`), the instance rows of a
study/series/instance, the base URL, and the per-request AuditEvent (`dicom.audit`)."""
from __future__ import annotations

import collections
import functools
import logging
from typing import Any, Iterable

from flask import current_app, g, request
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from dicom import audit as dicom_audit
from dicom.access import restricted, visible_only
from dicom.tables import dicom_instance, dicom_series, dicom_study
from fhirserver.errors import FhirError
from fhirserver.storage import ReadStatements, reading

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


def rows_for(pol: Any, study: str, series: str | None = None, sop: str | None = None) -> list[Any]:
    """`instance_rows` on the app's engine. A caller who sees every study (no access condition
    to add) takes the driver's way: the statement of the path's shape compiled once, run in
    autocommit on a pooled connection (`ReadStatements.rows`), which costs a fraction of a
    SQLAlchemy Connection and execute."""
    return path_rows(current_app.extensions[READS], pol, study, series, sop)


READS = "fhirserver.dicomweb.reads"  # the app's extension: its ReadStatements (`install_reads`)


def install_reads(app: Any) -> None:
    """Give `app` the compiled statements of the WADO paths (one per app, as its engine)."""
    app.extensions.setdefault(READS, ReadStatements(app.extensions["fhirserver"].repo.engine))


def path_rows(reads: ReadStatements, pol: Any, study: str, series: str | None = None,
              sop: str | None = None) -> list[Any]:
    """`rows_for` through `reads` (no request context needed: the lean path's)."""
    if restricted(pol):
        with reading(reads.engine) as conn:
            return instance_rows(conn, pol, study, series, sop)
    by_series, by_sop = series is not None, sop is not None
    rows = [PathRow._make(r) for r in reads.rows(
        ("dicomweb-path", by_series, by_sop), lambda: _path_statement(by_series, by_sop),
        {"study": study, "series": series or "", "sop": sop or ""})]
    if not rows:
        raise _not_found(study, series, sop)
    return rows


def _not_found(study: str, series: str | None, sop: str | None) -> FhirError:
    what = "instance" if sop else "series" if series else "study"
    return error(404, f"No {what} with that UID ({sop or series or study})")


def instance_rows(conn: Connection, pol: Any, study: str, series: str | None = None,
                  sop: str | None = None) -> list[Any]:
    """The instances addressed by a WADO path, ordered; 404 when none, or none the caller may see.

    One indexed statement: the path's keys, the series order, and the access gate's condition
    (`dicom.access.visible_only`) in the same query, so a retrieval costs one round trip and
    nothing is cached between requests (a revoked Consent counts at once)."""
    params = {"study": study, "series": series, "sop": sop}
    rows = conn.execute(_rows_query(pol, series is not None, sop is not None), params).all()
    if not rows:
        raise _not_found(study, series, sop)
    return rows


# what the WADO handlers read of an instance row (`received`, a timestamp the driver would give
# as text on SQLite, is not among them)
_PATH_COLS = ("study_uid", "series_uid", "sop_uid", "sop_class_uid", "instance_number", "number_of_frames",
              "rows", "columns", "transfer_syntax", "storage_key", "size")
PathRow = collections.namedtuple("PathRow", _PATH_COLS)  # type: ignore[misc]


@functools.lru_cache(maxsize=8)
def _path_statement(by_series: bool, by_sop: bool) -> Any:
    """The SELECT of a WADO path's instances, with bind parameters: built once per path shape
    (building a statement costs several times executing it; a memo, not state)."""
    i = dicom_instance.c
    q = select(*(i[c] for c in _PATH_COLS)).where(i.study_uid == bindparam("study", ""))
    if by_series:
        q = q.where(i.series_uid == bindparam("series", ""))
    if by_sop:
        q = q.where(i.sop_uid == bindparam("sop", ""))
    else:  # one instance needs no order (and no series row)
        q = q.outerjoin(dicom_series, dicom_series.c.series_uid == i.series_uid).order_by(
            dicom_series.c.series_number, i.series_uid, i.instance_number, i.sop_uid)
    return q


def _rows_query(pol: Any, by_series: bool, by_sop: bool) -> Any:
    q = _path_statement(by_series, by_sop)
    if restricted(pol):
        q = visible_only(q.join(dicom_study, dicom_study.c.study_uid == dicom_instance.c.study_uid), pol)
    return q


def instance_url(row: Any) -> str:
    return f"{base_url()}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"


# -- audit ------------------------------------------------------------------------------------
def audit(kind: str, study_uids: Iterable[str], detail: str, outcome: str = "0") -> None:
    """One AuditEvent for this request, through the process's one audit writer (queued: a
    retrieval does not wait for a database write; flushed at exit)."""
    audit_request(services(), request, principal(), kind, study_uids, detail, outcome)


def audit_request(svc: Any, req: Any, who: Any, kind: str, study_uids: Iterable[str], detail: str,
                  outcome: str = "0") -> None:
    """`audit` of request `req` (a werkzeug request) by `who` (a Principal or None)."""
    info = dicom_audit.event_info(
        kind, study_uids, detail, outcome=outcome, channel="dicomweb",
        client=getattr(who, "client_id", None), user=getattr(who, "fhir_user", None),
        remote=req.remote_addr or "unknown", what=f"{req.method} {req.path}")
    dicom_audit.queue(svc.audit, info)


def flush_audits(*apps: Any) -> None:
    """Write the queued AuditEvents of these apps (default: the current app) now."""
    for app in apps or (current_app,):
        app.extensions["fhirserver"].audit.flush()
