"""Patient-owned sharing (Consent), access requests, find-by-email and the access log.

A Consent the patient (or guardian) writes is enforced at every request by the access policy
(fhirserver.access.consent), so granting and revoking take effect at once for searches and for
tokens already issued:

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
`Patient/[id]/$respond-access` (patient/guardian accepts or rejects; for a profile no activated
account owns, the managing organization's staff do: fhirserver.access.lifecycle), `Patient/[id]/$access-log`
(the patient's AuditEvents: who read or changed what, and when).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select, update

from fhirserver.model import parse_count
# The sharing rules themselves (Consent grants, the guardian's age limit, reserved emails) are
# access rules and live in fhirserver.access.consent; the public names stay importable from here.
from fhirserver.access import (  # noqa: F401
    PLATFORM_IMAGING, email_owners_fn, platform_imaging_allowed, with_live_shares,
)
from fhirserver.interactions import FhirResponse
from fhirserver.errors import FhirError
from fhirserver.operations import _common as c
from fhirserver.access import lifecycle_access_request, lifecycle_email
from fhirserver.storage import idx_reference, idx_token, resource
from fhirserver.notify import send_email


# -- operations --------------------------------------------------------------------------------------
def _find_by_email(tx: Any, email: str) -> str | None:
    """The Patient id holding this email anywhere on the platform (live or reserved).

    Deliberately not limited by the caller's row filter: staff of another organization learn
    only whether the patient exists ($find-by-email), or send a request the patient answers
    ($request-access); the id never leaves the server."""
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
    email = c.check_email(c.params(req).get("email"))
    found = _find_by_email(tx, email) is not None
    c.audit(tx, ctx, "E", [], "find-by-email", "existence check" + (": found" if found else ": not found"))
    return FhirResponse(200, c.parameters(
        ("exists", found),
        ("message", "A patient with this email exists on the platform: request access with $request-access"
         if found else "No patient with this email: create the profile")))


def request_access(ctx, tx, req) -> FhirResponse:  # noqa: ANN001

    p = c.principal(ctx)
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
    settings = c.services(ctx).settings
    tx.flush()
    # the patient is not (yet) visible to the caller: the server checks their preference for them
    open_imaging = platform_imaging_allowed(tx.conn, pid, ctx.base)
    if open_imaging and scope == "imaging":
        tx.create("Consent", _consent(pid, org, imaging=True, note="added by clinic (patient allows imaging)"))
        c.audit(tx, ctx, "E", [f"Patient/{pid}", f"Organization/{org}"], "request-access", "granted automatically")
        return FhirResponse(200, c.parameters(("status", "granted"), ("patient", {"reference": f"Patient/{pid}"})))
    pk = tx.conn.execute(insert(lifecycle_access_request).values(
        patient_id=pid, organization=org, requested_by=getattr(p, "fhir_user", None), scope=scope,
        status="pending", created=c.now()).returning(lifecycle_access_request.c.pk)).scalar_one()
    send_email(tx.conn, settings.smtp_url, email, "A clinic asks to see your records",
               f"Organization/{org} asks to see your {'imaging' if scope == 'imaging' else 'records'}.\n"
               f"Accept or reject request {pk} in your portal ({c.root_url(ctx)}/portal).\n", patient_id=pid)
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


def _own_patient(ctx: Any, tx: Any, pid: str, body: dict[str, Any]) -> None:
    from fhirserver.access import check_answers_access

    check_answers_access(tx.conn, c.principal(ctx), {**body, "id": pid}, ctx.base)


def respond_access(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    pid = req.res_id
    _own_patient(ctx, tx, pid, c.visible(ctx, tx, "Patient", pid))
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
    pid = req.res_id
    _own_patient(ctx, tx, pid, c.visible(ctx, tx, "Patient", pid))
    rows = tx.conn.execute(select(lifecycle_access_request).where(
        lifecycle_access_request.c.patient_id == pid, lifecycle_access_request.c.status == "pending")
        .order_by(lifecycle_access_request.c.pk)).mappings().all()
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [
        {"name": "request", "part": [{"name": "id", "valueString": str(r["pk"])},
                                     {"name": "organization", "valueReference": {"reference": f"Organization/{r['organization']}"}},
                                     {"name": "scope", "valueString": r["scope"]}]} for r in rows]})


def access_log(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    """`Patient/[id]/$access-log`: AuditEvents naming the patient, newest first."""
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
