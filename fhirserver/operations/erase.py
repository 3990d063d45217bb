"""`Patient/[id]/$erase`: remove a patient's record irrecoverably, and nothing of anyone else's.

What belongs to the patient alone goes whole: every version, index and compartment row of the
patient and of every resource in its compartment or referencing it that names no other patient
(AuditEvents included), the DICOM files and index rows of its studies, its outbox messages,
invitations, account and reserved emails.

What is shared with other patients stays: a Group, a CareTeam, an Appointment, an AuditEvent, a
Patient linking to this one, anything naming another patient (directly, or through that patient's
RelatedPerson) gets a new version without the erased patient (the list item naming them, or the
element), and its older versions naming the patient are removed. When that leaves an invalid
resource, the reference keeps only a neutral display; when even that is invalid, the resource is
kept as it was and reported as kept. Older versions of other resources that once named the
patient are removed. What remains is one AuditEvent that names nobody. On SQLite the deleted
pages are zeroed (secure_delete) and the WAL is truncated after the commit, so the database file
keeps no copy either.

Allowed to (declared in fhirserver.access.operations, write scopes on every type): an admin; the
patient themself; staff who can see and write the patient, when the profile is not owned by an
activated account (the access gate's delete rule).
"""
from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from sqlalchemy import Text, and_, cast, delete, or_, select, update

from fhirserver.interactions import FhirResponse, check_id
from fhirserver.access import (
    lifecycle_access_request, lifecycle_account, lifecycle_email, lifecycle_invitation,
)
from fhirserver.errors import FhirError
from fhirserver.model import InvalidResource, iter_references, parse_reference, validate_resource
from fhirserver.operations import _common as c
from fhirserver.operations.merge import referencing
from fhirserver.storage import (
    INDEX_TABLES, idx_reference, resource, resource_compartment, resource_history,
)
from fhirserver.notify import notify_outbox

ERASED = "erased patient"  # the display a shared reference keeps when it cannot be removed


# -- what names the patient ---------------------------------------------------------------------
def _is_ref(v: Any, pid: str, base: str | None) -> bool:
    if not isinstance(v, dict) or not isinstance(v.get("reference"), str):
        return False
    ref = parse_reference(v["reference"], base)
    return ref.local and ref.res_type == "Patient" and ref.res_id == pid


def names(v: Any, pid: str, base: str | None) -> bool:
    """Whether any reference anywhere in `v` (contained resources included) is to Patient/pid."""
    if isinstance(v, dict):
        return _is_ref(v, pid, base) or any(names(x, pid, base) for x in v.values())
    if isinstance(v, list):
        return any(names(x, pid, base) for x in v)
    return False


def _direct(v: Any, pid: str, base: str | None) -> bool:
    """A reference to the patient reached without crossing a list: removing `v` removes it."""
    return _is_ref(v, pid, base) or (isinstance(v, dict) and any(
        _direct(x, pid, base) for x in v.values() if not isinstance(x, list)))


_GONE = object()


def without(v: Any, pid: str, base: str | None) -> Any:
    """`v` without the patient: the list item or the element holding a reference to them goes
    (a Group member, a CareTeam participant, a recipient); lists and objects left empty go too."""
    if isinstance(v, list):
        items = [without(x, pid, base) for x in v if not _direct(x, pid, base)]
        items = [x for x in items if x is not _GONE]
        return items if items else _GONE
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if _direct(x, pid, base):
                continue
            nx = without(x, pid, base)
            if nx is not _GONE:
                out[k] = nx
        return out if out else _GONE
    return v


def anonymized(v: Any, pid: str, base: str | None) -> Any:
    """`v` with each reference to the patient replaced by a neutral display (no id, no name)."""
    if _is_ref(v, pid, base):
        return {"display": ERASED}
    if isinstance(v, dict):
        return {k: anonymized(x, pid, base) for k, x in v.items()}
    if isinstance(v, list):
        return [anonymized(x, pid, base) for x in v]
    return v


def _valid(body: Any, res_type: str) -> dict[str, Any] | None:
    if not isinstance(body, dict) or body is _GONE:
        return None
    try:
        return validate_resource(body, res_type)
    except InvalidResource:
        return None


def _shared_pks(tx: Any, pid: str, rows: dict[int, dict[str, Any]], base: str | None) -> set[int]:
    """Storage keys (of `rows`: pk -> body) of resources that also belong to another patient: in
    another patient's compartment, referencing another Patient, or another patient's
    RelatedPerson."""
    if not rows:
        return set()
    tx.flush()
    pks = list(rows)
    out = set(tx.conn.execute(select(resource_compartment.c.res_pk).where(
        resource_compartment.c.res_pk.in_(pks), resource_compartment.c.comp_type == "Patient",
        resource_compartment.c.comp_id != pid)).scalars())
    related: dict[int, set[str]] = {}
    for pk, body in rows.items():
        for v in iter_references(body):
            ref = parse_reference(v, base)
            if ref.local and ref.res_type == "Patient" and ref.res_id != pid:
                out.add(pk)
            elif ref.local and ref.res_type == "RelatedPerson":
                related.setdefault(pk, set()).add(ref.res_id or "")
    wanted = sorted({i for ids in related.values() for i in ids})
    if wanted:
        rp = resource.alias("rp")
        others = set(tx.conn.execute(select(rp.c.res_id).where(
            rp.c.res_type == "RelatedPerson", rp.c.res_id.in_(wanted),
            rp.c.pk.in_(select(idx_reference.c.res_pk).where(
                idx_reference.c.res_type == "RelatedPerson", idx_reference.c.param == "patient",
                idx_reference.c.target_type == "Patient", idx_reference.c.target_id != pid)))).scalars())
        out.update(pk for pk, ids in related.items() if ids & others)
    return out


# -- the operation --------------------------------------------------------------------------------
def _authorize(ctx: Any, tx: Any, pid: str) -> None:
    """The caller erases this patient: an admin, the patient themself, or staff who may write
    them (the operation's needs were checked by the access gate before this runs)."""
    p = c.principal(ctx)
    if p is not None and p.role != "admin":
        if p.role == "patient":
            if pid not in p.patients and p.patient != pid:
                raise FhirError(403, "A patient may erase only their own record", "forbidden")
        elif p.role == "staff":
            ctx.access.check_write("Patient", c.visible(ctx, tx, "Patient", pid))
        else:
            raise FhirError(403, "Not permitted to erase this patient", "forbidden")
    # an owned profile: only its patient or an admin (the same rule as any delete)
    ctx.access.check_delete(tx, "Patient", pid)


def erase(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    if req.res_type != "Patient" or not req.res_id:
        raise FhirError(404, "$erase is an operation on Patient/[id]", "not-supported")
    pid = check_id(req.res_id)
    p = c.principal(ctx)
    conn = tx.conn
    _authorize(ctx, tx, pid)
    if tx.current("Patient", pid) is None:
        raise FhirError(404, f"Patient/{pid} is not known", "not-found")
    base = ctx.base
    accounts = conn.execute(select(lifecycle_account).where(
        lifecycle_account.c.res_type == "Patient", lifecycle_account.c.res_id == pid)).mappings().all()
    if tx.postgres is False:
        conn.exec_driver_sql("PRAGMA secure_delete=ON")
    emails: set[str] = set()
    for text in conn.execute(select(resource_history.c.body).where(
            resource_history.c.res_type == "Patient", resource_history.c.res_id == pid)).scalars():
        if text:
            emails.update(c.emails_of(json.loads(text)))
    emails.update(a["email"] for a in accounts)

    # Every version naming the patient (whatever the reference spelling), and the live resources
    # referencing them or in their compartment.
    tx.flush()
    naming: dict[tuple[str, str], list[int]] = {}
    for hpk, t, i, text in conn.execute(select(
            resource_history.c.pk, resource_history.c.res_type, resource_history.c.res_id,
            resource_history.c.body).where(cast(resource_history.c.body, Text).like(f"%Patient/{pid}%"))):
        if text and names(json.loads(text), pid, base):
            naming.setdefault((t, i), []).append(hpk)
    keys = set(referencing(tx, pid)) | set(naming)
    keys.discard(("Patient", pid))
    whole: set[tuple[str, str]] = {("Patient", pid)}
    live: dict[int, tuple[str, str, dict[str, Any]]] = {}
    drop_versions: list[int] = []
    for t, i in sorted(keys):
        cur = tx.current(t, i, for_update=True)
        if cur is None:  # versions without a resource row: nothing else to keep
            drop_versions.extend(naming.get((t, i), []))
        elif cur.deleted or cur.body is None:
            # gone already: keep only the versions that never named the patient
            remaining = conn.execute(select(resource_history.c.pk).where(
                resource_history.c.res_type == t, resource_history.c.res_id == i,
                resource_history.c.body.isnot(None),
                resource_history.c.pk.notin_(naming.get((t, i), [-1])))).first()
            if remaining:
                drop_versions.extend(naming.get((t, i), []))
            else:
                whole.add((t, i))
        else:
            body = json.loads(cur.body)
            if names(body, pid, base) or (t, i) not in naming:
                live[cur.pk] = (t, i, body)
            else:  # no longer about the patient: only older versions named them
                drop_versions.extend(naming.get((t, i), []))
    shared = _shared_pks(tx, pid, {pk: b for pk, (t, _i, b) in live.items() if t != "Patient"}, base)
    shared.update(pk for pk, (t, _i, _b) in live.items() if t == "Patient")  # another patient's profile
    # what the caller saw of them before they change (reported by name; the rest only counted)
    seen = set(c.visible_keys(ctx, tx, [(t, i) for pk, (t, i, _b) in live.items() if pk in shared]))
    updated: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    for pk, (t, i, body) in live.items():
        if pk not in shared:
            whole.add((t, i))
            continue
        if not names(body, pid, base):
            continue  # shared, and in the compartment only through someone else: nothing to remove
        new = _valid(without(body, pid, base), t) or _valid(anonymized(body, pid, base), t)
        if new is None:
            kept.append((t, i))
            continue
        tx.update(t, i, new)
        updated.append((t, i))
        drop_versions.extend(naming.get((t, i), []))
    tx.flush()
    targets = sorted(whole)
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
    for chunk in range(0, len(drop_versions), 500):
        conn.execute(delete(resource_history).where(resource_history.c.pk.in_(drop_versions[chunk:chunk + 500])))
    imaging = c.port(ctx, "imaging")
    files = imaging.erase_patient(conn, pid, study_ids)
    # outbox, lifecycle rows, logins
    conn.execute(delete(notify_outbox).where(or_(notify_outbox.c.patient_id == pid,
                                                 notify_outbox.c.recipient.in_(sorted(emails)))))
    users = c.port(ctx, "logins").erase(tx, user_pks=[a["user_pk"] for a in accounts],
                                        usernames=emails, patient_id=pid)
    for table, col in ((lifecycle_invitation, lifecycle_invitation.c.user_pk),
                       (lifecycle_account, lifecycle_account.c.user_pk)):
        if users:
            conn.execute(delete(table).where(col.in_(users)))
    conn.execute(delete(lifecycle_invitation).where(lifecycle_invitation.c.res_id == pid,
                                                    lifecycle_invitation.c.res_type == "Patient"))
    conn.execute(delete(lifecycle_email).where(or_(lifecycle_email.c.email.in_(sorted(emails)),
                                                   and_(lifecycle_email.c.res_type == "Patient",
                                                        lifecycle_email.c.res_id == pid))))
    conn.execute(delete(lifecycle_access_request).where(lifecycle_access_request.c.patient_id == pid))
    erasure = uuid.uuid4().hex
    detail = (f"erasure {erasure}: {len(targets)} resources and {len(files)} DICOM files removed, "
              f"{len(updated)} shared resources updated, {len(kept)} kept")
    report = [(name, {"reference": f"{t}/{i}"}) for name, keys in (("updated-resource", updated),
                                                                  ("kept-resource", kept))
              for t, i in keys if (t, i) in seen]
    if p is not None and p.fhir_user == f"Patient/{pid}":
        ctx = _anonymous(ctx)
    c.audit(tx, ctx, "D", [], "erase", detail)
    if not tx.postgres:
        conn.exec_driver_sql("PRAGMA secure_delete=OFF")
    _after_commit(ctx, tx, files, imaging)
    return FhirResponse(200, c.parameters(("result", True), ("erasure", erasure),
                                          ("resources", len(targets)), ("dicom-files", len(files)),
                                          ("updated", len(updated)), ("kept", len(kept)), *report))


@dataclasses.dataclass(frozen=True)
class _Unnamed:
    """Who the AuditEvent of a patient erasing themself names: the app only, never the patient."""

    client_id: str
    fhir_user: None = None


def _anonymous(ctx: Any) -> Any:
    return dataclasses.replace(ctx, principal=_Unnamed(getattr(c.principal(ctx), "client_id", None) or "?"))


def _after_commit(ctx: Any, tx: Any, keys: list[str], imaging: Any) -> None:
    """Delete the files and flush SQLite's WAL once the transaction has committed (a rolled
    back erase deletes nothing)."""
    engine, postgres = tx.conn.engine, tx.postgres

    def run() -> None:
        imaging.delete_files(keys)
        if not postgres:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    ctx.after_commit(tx, run)
