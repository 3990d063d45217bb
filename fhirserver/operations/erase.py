"""`Patient/[id]/$erase`: remove a patient's whole compartment irrecoverably.

Every version and history row, index and compartment row of the patient and of every resource in
its compartment or referencing it (AuditEvents included), the DICOM files and index rows of its
studies, its outbox messages, invitations, account and reserved emails. Older versions of other
resources that once referenced the patient lose those versions. What remains is one AuditEvent
that names nobody. On SQLite the deleted pages are zeroed (secure_delete) and the WAL is
truncated after the commit, so the database file keeps no copy either.

Allowed to: an admin; the patient themself; staff of the managing organization when the profile
is not owned by an activated account.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Text, and_, cast, delete, or_, select

from fhirserver.api.interactions import FhirResponse
from fhirserver.api.outcome import FhirError
from fhirserver.operations import _common as c
from fhirserver.operations.merge import referencing
from fhirserver.storage.tables import INDEX_TABLES, resource, resource_history


def erase(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    from dicom.store import file_store
    from dicom.tables import dicom_instance, dicom_series, dicom_study
    from fhirserver.notify.tables import notify_outbox
    from fhirserver.operations.tables import (
        lifecycle_access_request, lifecycle_account, lifecycle_email, lifecycle_invitation,
    )
    from smart_auth.tables import auth_code, auth_session, auth_token, auth_user

    ctx.access.check_interaction("operation", "Patient")
    pid = req.res_id
    p = c.principal(ctx)
    conn = tx.conn
    accounts = conn.execute(select(lifecycle_account).where(
        lifecycle_account.c.res_type == "Patient", lifecycle_account.c.res_id == pid)).mappings().all()
    owned = any(a["status"] in ("active", "closed") for a in accounts)
    if p is not None and p.role != "admin":
        if p.role == "patient" and pid in p.patients:
            pass
        elif p.role == "staff":
            body = c.visible(ctx, tx, "Patient", pid)
            ctx.access.check_write("Patient", body)
            if owned:
                raise FhirError(403, "This profile is owned by its patient: only the patient (or an admin) "
                                "can erase it; unlink it instead", "forbidden")
        else:
            raise FhirError(403, "Not permitted to erase this patient", "forbidden")
    cur = tx.current("Patient", pid)
    if cur is None:
        raise FhirError(404, f"Patient/{pid} is not known", "not-found")
    if tx.postgres is False:
        conn.exec_driver_sql("PRAGMA secure_delete=ON")
    emails: set[str] = set()
    for text in conn.execute(select(resource_history.c.body).where(
            resource_history.c.res_type == "Patient", resource_history.c.res_id == pid)).scalars():
        if text:
            emails.update(c.emails_of(json.loads(text)))
    emails.update(a["email"] for a in accounts)
    targets = referencing(tx, pid) + [("Patient", pid)]
    # soft-deleted resources keep patient data only in history: find them by their references
    needle = f'%"Patient/{pid}"%'
    hist = conn.execute(select(resource_history.c.res_type, resource_history.c.res_id).where(
        cast(resource_history.c.body, Text).like(needle)).distinct()).all()
    current_refs = set(targets)
    partial = []
    for t, i in hist:
        if (t, i) in current_refs:
            continue
        row = tx.current(t, i)
        if row is None or row.deleted:
            current_refs.add((t, i))  # gone anyway: erase the whole resource
        else:
            partial.append((t, i))  # now about someone else: drop only the versions naming the patient
    targets = sorted(current_refs)
    study_ids = [i for t, i in targets if t == "ImagingStudy"]
    pks = [r[0] for r in conn.execute(select(resource.c.pk).where(
        or_(*[and_(resource.c.res_type == t, resource.c.res_id == i) for t, i in targets]))).all()]
    for table in INDEX_TABLES:
        if pks:
            conn.execute(delete(table).where(table.c.res_pk.in_(pks)))
    for t, i in targets:
        conn.execute(delete(resource_history).where(resource_history.c.res_type == t, resource_history.c.res_id == i))
    if pks:
        conn.execute(delete(resource).where(resource.c.pk.in_(pks)))
    for t, i in partial:
        conn.execute(delete(resource_history).where(
            resource_history.c.res_type == t, resource_history.c.res_id == i,
            cast(resource_history.c.body, Text).like(needle)))
    # DICOM: index rows and files of the patient's studies
    studies = conn.execute(select(dicom_study.c.study_uid).where(or_(
        dicom_study.c.patient_res_id == pid,
        dicom_study.c.imaging_study_id.in_(study_ids) if study_ids else False))).scalars().all()
    keys: list[str] = []
    if studies:
        keys = list(conn.execute(select(dicom_instance.c.storage_key).where(
            dicom_instance.c.study_uid.in_(studies))).scalars())
        conn.execute(delete(dicom_instance).where(dicom_instance.c.study_uid.in_(studies)))
        conn.execute(delete(dicom_series).where(dicom_series.c.study_uid.in_(studies)))
        conn.execute(delete(dicom_study).where(dicom_study.c.study_uid.in_(studies)))
        still = set(conn.execute(select(dicom_instance.c.storage_key).where(
            dicom_instance.c.storage_key.in_(keys))).scalars()) if keys else set()
        keys = [k for k in keys if k not in still]
        from dicom.index import record_erased

        record_erased(conn, keys)  # a crash before the files go must not bring them back
    # outbox, lifecycle rows, logins
    conn.execute(delete(notify_outbox).where(or_(notify_outbox.c.patient_id == pid,
                                                 notify_outbox.c.recipient.in_(sorted(emails)))))
    users = [a["user_pk"] for a in accounts]
    users += list(conn.execute(select(auth_user.c.pk).where(or_(
        auth_user.c.fhir_user == f"Patient/{pid}", auth_user.c.username.in_(sorted(emails))))).scalars())
    for u in set(users):
        for tbl, col in ((auth_token, auth_token.c.user_pk), (auth_code, auth_code.c.user_pk),
                         (auth_session, auth_session.c.user_pk), (lifecycle_invitation, lifecycle_invitation.c.user_pk),
                         (lifecycle_account, lifecycle_account.c.user_pk), (auth_user, auth_user.c.pk)):
            conn.execute(delete(tbl).where(col == u))
    conn.execute(delete(lifecycle_invitation).where(lifecycle_invitation.c.res_id == pid,
                                                    lifecycle_invitation.c.res_type == "Patient"))
    conn.execute(delete(lifecycle_email).where(or_(lifecycle_email.c.email.in_(sorted(emails)),
                                                   and_(lifecycle_email.c.res_type == "Patient",
                                                        lifecycle_email.c.res_id == pid))))
    conn.execute(delete(lifecycle_access_request).where(lifecycle_access_request.c.patient_id == pid))
    from smart_auth import store

    store.bump_revocations()
    erasure = uuid.uuid4().hex
    detail = f"erasure {erasure}: {len(targets)} resources and {len(keys)} DICOM files removed"
    if p is not None and p.fhir_user == f"Patient/{pid}":
        ctx = _anonymous(ctx)
    c.audit(tx, ctx, "D", [], "erase", detail)
    if not tx.postgres:
        conn.exec_driver_sql("PRAGMA secure_delete=OFF")
    settings = c.services().settings
    _after_commit(keys, settings, tx.postgres)
    return FhirResponse(200, c.parameters(("result", True), ("erasure", erasure),
                                          ("resources", len(targets)), ("dicom-files", len(keys))))


def _anonymous(ctx: Any) -> Any:
    import dataclasses

    class _P:  # the patient erasing themself is not named in the remaining AuditEvent
        client_id = getattr(c.principal(ctx), "client_id", "?")
        fhir_user = None

    class _A:
        p = _P()

    return dataclasses.replace(ctx, access=_A())


def _after_commit(keys: list[str], settings: Any, postgres: bool) -> None:
    """Delete the files and flush SQLite's WAL once the transaction has committed."""
    from dicom.store import file_store

    def run(resp: Any) -> Any:
        if 200 <= resp.status_code < 300:
            store = file_store(settings.data_dir)
            for k in keys:
                store.delete(k)
            if not postgres:
                engine = c.services().repo.engine
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return resp

    try:
        from flask import after_this_request, has_request_context

        if has_request_context():
            after_this_request(run)
            return
    except ImportError:  # pragma: no cover
        pass

    class _R:
        status_code = 200

    run(_R())
