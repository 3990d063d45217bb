"""Patient-owned sharing (Consent), access requests, find-by-email and the access log.

A Consent the patient (or guardian) writes is enforced at every request, so granting and revoking
take effect at once for searches and for tokens already issued:

- `status = active`, `patient`, `provision.type = permit` (or absent), `provision.actor.reference`
  an Organization or a Practitioner: that organization's staff (or that practitioner) see the
  patient's data; `provision.class` containing `ImagingStudy` limits it to imaging;
  `provision.period` limits when the grant is valid; `provision.dataPeriod` limits the shared data
  to resources dated within that window (the Patient itself stays visible).
- the platform-wide preference "any clinician on the platform may see my imaging": an active
  Consent with `category` `urn:fhirserver:sharing|platform-imaging` (no actor needed).

Operations: `Patient/$find-by-email` (staff: only says whether the email exists),
`Patient/$request-access` (staff of another organization ask; automatic when the patient allows
the platform to see their imaging, otherwise the patient gets an email),
`Patient/[id]/$respond-access` (patient/guardian accepts or rejects), `Patient/[id]/$access-log`
(the patient's AuditEvents: who read or changed what, and when).
"""
from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, datetime, timezone
from typing import Any, Sequence

from sqlalchemy import and_, insert, select, update

from fhirserver.model.integers import parse_count
from fhirserver.api.interactions import FhirResponse
from fhirserver.api.outcome import FhirError
from fhirserver.operations import _common as c
from fhirserver.operations.tables import lifecycle_access_request, lifecycle_account, lifecycle_email
from fhirserver.storage.tables import idx_reference, idx_token, resource

PLATFORM_IMAGING = "platform-imaging"


# -- enforcement (called by smart_auth for every request) --------------------------------------------
def _consent_grants(body: dict[str, Any], today: str) -> tuple[str | None, bool] | None:
    """(patient id, imaging only) of an effective permit Consent without a data window, else None."""
    if _data_window(body):
        return None
    if body.get("status") != "active":
        return None
    prov = body.get("provision") or {}
    if prov.get("type", "permit") != "permit":
        return None
    period = prov.get("period") or {}
    if period.get("start") and period["start"][:10] > today:
        return None
    if period.get("end") and period["end"][:10] < today:
        return None
    pid = c.ref_id(body.get("patient"), "Patient")
    imaging = any(k.get("code") in c.IMAGING_TYPES for k in prov.get("class") or [])
    return pid, imaging


def _data_window(body: dict[str, Any]) -> tuple[str, str] | None:
    """`provision.dataPeriod` as (start, end) ISO strings ('' for an open end), or None."""
    dp = (body.get("provision") or {}).get("dataPeriod") or {}
    if not dp.get("start") and not dp.get("end"):
        return None
    return dp.get("start") or "", dp.get("end") or ""


def _window_grant(body: dict[str, Any], today: str) -> tuple[str, str, str, bool] | None:
    """(patient id, data from, data to, imaging only) of an effective Consent limited to a data window."""
    window = _data_window(body)
    if window is None:
        return None
    plain = {**body, "provision": {k: v for k, v in (body.get("provision") or {}).items() if k != "dataPeriod"}}
    g = _consent_grants(plain, today)
    if not g or not g[0]:
        return None
    return g[0], window[0], window[1], g[1]


def with_live_shares(engine: Any, p: Any, settings: Any) -> Any:
    """The principal with the shares in force now (staff), or a guardian's children under age."""
    if p.role == "guardian" and p.patients:
        return _guardian_age_limit(engine, p, getattr(settings, "guardian_age_limit", 18))
    if p.role not in ("staff", "system") or p.unrestricted:
        return p
    targets = [("Organization", o) for o in p.organizations]
    if p.fhir_user and p.fhir_user.startswith("Practitioner/"):
        targets.append(("Practitioner", p.fhir_user.split("/", 1)[1]))
    conds = [and_(idx_reference.c.target_type == t, idx_reference.c.target_id == i) for t, i in targets]
    from sqlalchemy import or_

    q_actor = select(resource.c.body).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_reference.c.res_pk).where(
            idx_reference.c.res_type == "Consent", idx_reference.c.param == "actor", or_(*conds)))) \
        if conds else None
    q_platform = select(resource.c.body).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_token.c.res_pk).where(
            idx_token.c.res_type == "Consent", idx_token.c.param == "category",
            idx_token.c.code == PLATFORM_IMAGING)))
    today = date.today().isoformat()
    full: set[str] = set()
    imaging: set[str] = set()
    with engine.connect() as conn:
        rows = list(conn.execute(q_actor).scalars()) if q_actor is not None else []
        platform = list(conn.execute(q_platform).scalars()) if p.role == "staff" else []
    windows: set[tuple[str, str, str, bool]] = set()
    for text in rows:
        consent = json.loads(text)
        g = _consent_grants(consent, today)
        if g and g[0]:
            (imaging if g[1] else full).add(g[0])
        w = _window_grant(consent, today)
        if w:
            windows.add(w)
    for text in platform:
        g = _consent_grants(json.loads(text), today)
        if g and g[0]:
            imaging.add(g[0])
    if not full and not imaging and not windows:
        return p
    return dataclasses.replace(p, patients=tuple(sorted(set(p.patients) | full)),
                               shared_imaging=tuple(sorted(imaging - full - set(p.patients))),
                               shared_windows=tuple(sorted(w for w in windows if w[0] not in full)))


def _age(birth: str, today: date) -> int | None:
    m = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", birth or "")
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    return today.year - y - ((today.month, today.day) < (mo, d))


def _guardian_age_limit(engine: Any, p: Any, limit: int) -> Any:
    with engine.connect() as conn:
        rows = conn.execute(select(resource.c.res_id, resource.c.body).where(
            resource.c.res_type == "Patient", resource.c.res_id.in_(list(p.patients)))).all()
    today = date.today()
    keep = []
    for rid, body in rows:
        age = _age((json.loads(body) if body else {}).get("birthDate", ""), today)
        if body and (age is None or age < limit):
            keep.append(rid)
    keep_t = tuple(x for x in p.patients if x in keep)
    if keep_t == p.patients:
        return p
    return dataclasses.replace(p, patients=keep_t, patient=p.patient if p.patient in keep_t else
                               ("" if p.patient else None))


def email_owners_fn(engine: Any):  # noqa: ANN201
    def owners(emails: Sequence[str]) -> dict[str, tuple[str, str]]:
        with engine.connect() as conn:
            rows = conn.execute(select(lifecycle_email).where(
                lifecycle_email.c.email.in_([e.lower() for e in emails]))).mappings()
            return {r["email"]: (r["res_type"], r["res_id"]) for r in rows}
    return owners


_PATIENT_PATH = re.compile(r"^/fhir/Patient/([A-Za-z0-9\-.]{1,64})/?$")


def check_delete(engine: Any, p: Any, path: str) -> None:
    """Staff may not delete a profile owned by its patient (an activated account): 403."""
    m = _PATIENT_PATH.match(path)
    if not m or p.role == "admin":
        return
    pid = m.group(1)
    with engine.connect() as conn:
        owned = conn.execute(select(lifecycle_account.c.user_pk).where(
            lifecycle_account.c.res_type == "Patient", lifecycle_account.c.res_id == pid,
            lifecycle_account.c.status == "active")).first()
    if owned and p.role != "patient":
        raise FhirError(403, "This profile is owned by its patient (an activated account): it cannot be "
                        "deleted by staff, only removed from your organization with $unlink", "forbidden")
    if not owned:  # a deleted profile keeps its email reserved
        with engine.begin() as conn:
            body = conn.execute(select(resource.c.body).where(resource.c.res_type == "Patient",
                                                              resource.c.res_id == pid)).scalar()
            for email in c.emails_of(json.loads(body)) if body else []:
                if conn.execute(select(lifecycle_email.c.email).where(lifecycle_email.c.email == email)).first():
                    continue
                conn.execute(insert(lifecycle_email).values(email=email, res_type="Patient", res_id=pid,
                                                            status="deleted"))


# -- operations --------------------------------------------------------------------------------------
def _find_by_email(tx: Any, email: str) -> str | None:
    """The Patient id holding this email anywhere on the platform (live or reserved)."""
    row = tx.conn.execute(select(lifecycle_email.c.res_id).where(
        lifecycle_email.c.email == email, lifecycle_email.c.res_type == "Patient")).first()
    if row:
        return row[0]
    tx.flush()
    row = tx.conn.execute(select(resource.c.res_id).where(
        resource.c.res_type == "Patient", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_token.c.res_pk).where(
            idx_token.c.res_type == "Patient", idx_token.c.param == "email",
            idx_token.c.code == email))).order_by(resource.c.pk)).first()
    return row[0] if row else None


def find_by_email(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    ctx.access.check_interaction("operation", "Patient")
    c.require(ctx, "staff")
    email = c.check_email(c.params(req).get("email"))
    found = _find_by_email(tx, email) is not None
    c.audit(tx, ctx, "E", [], "find-by-email", "existence check" + (": found" if found else ": not found"))
    return FhirResponse(200, c.parameters(
        ("exists", found),
        ("message", "A patient with this email exists on the platform: request access with $request-access"
         if found else "No patient with this email: create the profile")))


def request_access(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    from fhirserver.notify import send_email

    ctx.access.check_interaction("operation", "Patient")
    p = c.require(ctx, "staff")
    args = c.params(req)
    email = c.check_email(args.get("email"))
    scope = args.get("scope") or "imaging"
    if scope not in ("all", "imaging"):
        raise FhirError(422, "scope is 'all' or 'imaging'", "value")
    org = args.get("organization") or (p.organizations[0] if p is not None and p.organizations else None)
    if org is None or (p is not None and p.role != "admin" and org not in p.organizations):
        raise FhirError(422, "Name one of your organizations", "value")
    pid = _find_by_email(tx, email)
    if pid is None:
        raise FhirError(404, "No patient with this email on the platform", "not-found")
    settings = c.services().settings
    open_imaging = False
    tx.flush()
    for text in tx.conn.execute(select(resource.c.body).where(
            resource.c.res_type == "Consent", resource.c.deleted.is_(False),
            resource.c.pk.in_(select(idx_token.c.res_pk).where(
                idx_token.c.param == "category", idx_token.c.code == PLATFORM_IMAGING)),
            resource.c.pk.in_(select(idx_reference.c.res_pk).where(
                idx_reference.c.param == "patient", idx_reference.c.target_id == pid)))).scalars():
        if _consent_grants(json.loads(text), date.today().isoformat()):
            open_imaging = True
    if open_imaging and scope == "imaging":
        tx.create("Consent", _consent(pid, org, imaging=True, note="added by clinic (patient allows imaging)"))
        c.audit(tx, ctx, "E", [f"Patient/{pid}", f"Organization/{org}"], "request-access", "granted automatically")
        return FhirResponse(200, c.parameters(("status", "granted"), ("patient", {"reference": f"Patient/{pid}"})))
    pk = tx.conn.execute(insert(lifecycle_access_request).values(
        patient_id=pid, organization=org, requested_by=getattr(p, "fhir_user", None), scope=scope,
        status="pending", created=c.now()).returning(lifecycle_access_request.c.pk)).scalar_one()
    send_email(tx.conn, settings.smtp_url, email, "A clinic asks to see your records",
               f"Organization/{org} asks to see your {'imaging' if scope == 'imaging' else 'records'}.\n"
               f"Accept or reject request {pk} in your portal ({c.root_url()}/portal).\n", patient_id=pid)
    c.audit(tx, ctx, "E", [f"Patient/{pid}", f"Organization/{org}"], "request-access", f"request {pk} pending")
    return FhirResponse(200, c.parameters(("status", "pending"), ("request", str(pk))))


def _consent(pid: str, org: str, imaging: bool, note: str = "") -> dict[str, Any]:
    prov: dict[str, Any] = {"type": "permit", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP"}]},
        "reference": {"reference": f"Organization/{org}"}}]}
    if imaging:
        prov["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": "ImagingStudy"}]
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": c.SHARING, "code": "share"}], "text": note or "sharing"}],
            "patient": {"reference": f"Patient/{pid}"},
            "dateTime": datetime.now(timezone.utc).isoformat(timespec="seconds"), "provision": prov}


def _own_patient(ctx: Any, pid: str) -> None:
    p = c.principal(ctx)
    if p is not None and p.role != "admin" and pid not in set(p.patients) | {p.patient}:
        raise FhirError(403, "Only the patient (or their guardian) may answer", "forbidden")


def respond_access(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    ctx.access.check_interaction("operation", "Patient")
    pid = req.res_id
    c.visible(ctx, tx, "Patient", pid)
    _own_patient(ctx, pid)
    args = c.params(req)
    decision = args.get("decision")
    if decision not in ("accept", "reject"):
        raise FhirError(422, "decision is 'accept' or 'reject'", "value")
    rpk = parse_count(args.get("request"))
    if rpk is None:
        raise FhirError(422, "request: the number of the access request", "value")
    row = tx.conn.execute(select(lifecycle_access_request).where(
        lifecycle_access_request.c.pk == rpk, lifecycle_access_request.c.patient_id == pid)).mappings().first()
    if row is None or row["status"] != "pending":
        raise FhirError(404, "No pending access request with this number", "not-found")
    tx.conn.execute(update(lifecycle_access_request).where(lifecycle_access_request.c.pk == rpk)
                    .values(status="accepted" if decision == "accept" else "rejected"))
    out: list[tuple[str, Any]] = [("status", "accepted" if decision == "accept" else "rejected")]
    if decision == "accept":
        stored = tx.create("Consent", _consent(pid, row["organization"], row["scope"] == "imaging",
                                               "access request accepted"))
        out.append(("consent", {"reference": f"Consent/{stored.res_id}"}))
    c.audit(tx, ctx, "E", [f"Patient/{pid}", f"Organization/{row['organization']}"], "respond-access", decision)
    return FhirResponse(200, c.parameters(*out))


def access_requests(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    """`Patient/[id]/$access-requests`: the pending requests the patient can answer."""
    ctx.access.check_interaction("operation", "Patient")
    pid = req.res_id
    c.visible(ctx, tx, "Patient", pid)
    _own_patient(ctx, pid)
    rows = tx.conn.execute(select(lifecycle_access_request).where(
        lifecycle_access_request.c.patient_id == pid, lifecycle_access_request.c.status == "pending")
        .order_by(lifecycle_access_request.c.pk)).mappings().all()
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [
        {"name": "request", "part": [{"name": "id", "valueString": str(r["pk"])},
                                     {"name": "organization", "valueReference": {"reference": f"Organization/{r['organization']}"}},
                                     {"name": "scope", "valueString": r["scope"]}]} for r in rows]})


def access_log(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    """`Patient/[id]/$access-log`: AuditEvents naming the patient, newest first."""
    ctx.access.check_interaction("operation", "Patient")
    pid = req.res_id
    c.visible(ctx, tx, "Patient", pid)
    count = min(parse_count(req.param("_count") or "100") or 100, 1000)
    tx.flush()
    rows = tx.conn.execute(select(resource.c.res_id, resource.c.body).where(
        resource.c.res_type == "AuditEvent", resource.c.deleted.is_(False),
        *ctx.access.row_filter("AuditEvent"),  # only the events the caller may see (none naming others)
        resource.c.pk.in_(select(idx_reference.c.res_pk).where(
            idx_reference.c.res_type == "AuditEvent", idx_reference.c.target_type == "Patient",
            idx_reference.c.target_id == pid))).order_by(resource.c.pk.desc()).limit(count)).all()
    entries = [{"fullUrl": f"{ctx.base}/AuditEvent/{rid}", "resource": json.loads(body)} for rid, body in rows]
    c.audit(tx, ctx, "R", [f"Patient/{pid}"], "access-log", "access log read")
    return FhirResponse(200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                              "entry": entries})
