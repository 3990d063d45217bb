"""`Patient/$merge` in the shape of FHIR R5's operation (source-patient, target-patient,
result-patient, preview).

Every resource referencing the source (reports, studies, appointments, documents, messages,
consents...) is repointed to the target, the DICOM index rows follow, the source becomes inactive
with a `replaced-by` link and the target gets a `replaces` link, all in the request's one
transaction (a failure at any step changes nothing); AuditEvents keep their original references.
`preview=true` lists what would move and changes nothing.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import or_, select, update

from fhirserver.interactions import FhirResponse
from fhirserver.errors import FhirError
from fhirserver.model import InvalidResource, parse_reference, validate_resource
from fhirserver.operations import _common as c
from fhirserver.storage import idx_reference, resource, resource_compartment
from fhirserver.access import lifecycle_account

KEEP = frozenset({"AuditEvent", "Provenance"})


def _repoint(v: Any, src: str, tgt: str, base: str | None = None) -> Any:
    """`v` with every reference to Patient/src (any spelling the reference parser accepts)
    pointing at Patient/tgt."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            ref = parse_reference(x, base) if k == "reference" and isinstance(x, str) else None
            if ref is not None and ref.local and ref.res_type == "Patient" and ref.res_id == src:
                out[k] = f"Patient/{tgt}"
            else:
                out[k] = _repoint(x, src, tgt, base)
        return out
    if isinstance(v, list):
        return [_repoint(x, src, tgt, base) for x in v]
    return v


def referencing(tx: Any, pid: str) -> list[tuple[str, str]]:
    """(type, id) of current resources referencing or in the compartment of Patient/pid."""
    tx.flush()
    pks = select(idx_reference.c.res_pk).where(idx_reference.c.target_type == "Patient",
                                               idx_reference.c.target_id == pid)
    comp = select(resource_compartment.c.res_pk).where(resource_compartment.c.comp_type == "Patient",
                                                       resource_compartment.c.comp_id == pid)
    rows = tx.conn.execute(select(resource.c.res_type, resource.c.res_id).where(
        resource.c.deleted.is_(False), resource.c.pk.in_(pks.union(comp)))
        .order_by(resource.c.res_type, resource.c.res_id)).all()
    return [(t, i) for t, i in rows if not (t == "Patient" and i == pid)]


def merge(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    if req.res_id:
        raise FhirError(404, "$merge is called on the Patient type: Patient/$merge", "not-supported")
    args = c.params(req)
    src = c.ref_id(args.get("source-patient"), "Patient", ctx.base)
    tgt = c.ref_id(args.get("target-patient"), "Patient", ctx.base)
    if not src or not tgt:
        raise FhirError(400, "source-patient and target-patient (Patient references) are required", "required")
    if src == tgt:
        raise FhirError(422, "The source and the target are the same patient", "processing")
    source = c.visible(ctx, tx, "Patient", src)
    target = c.visible(ctx, tx, "Patient", tgt)
    for body, what in ((source, "source"), (target, "target")):
        ctx.access.check_write("Patient", body)
        if any(l.get("type") == "replaced-by" for l in body.get("link") or []):
            raise FhirError(422, f"The {what} patient was already merged into another one", "processing")

    if tx.conn.execute(select(lifecycle_account.c.user_pk).where(
            lifecycle_account.c.res_type == "Patient", lifecycle_account.c.res_id == src,
            lifecycle_account.c.status == "active")).first():
        raise FhirError(422, "The source profile is owned by its patient's account; merge the other way round",
                        "processing")
    # only what the caller can see moves: the rest keeps the source reference, which now says
    # `replaced-by` the target
    moving = c.visible_keys(ctx, tx, [(t, i) for t, i in referencing(tx, src) if t not in KEEP])
    preview = c.truthy(args.get("preview"))
    result = args.get("result-patient")
    if result is not None and (not isinstance(result, dict) or result.get("id") != tgt):
        raise FhirError(422, "result-patient must be the target patient (same id)", "processing")
    moved_refs = [{"reference": f"{t}/{i}"} for t, i in moving]
    if preview:
        return FhirResponse(200, c.parameters(("outcome", f"Preview: {len(moving)} resources would move"),
                                              ("result", target), *[("moved", r) for r in moved_refs]))
    for t, i in moving:
        cur = tx.current(t, i, for_update=True, where=ctx.access.row_filter(t))
        if cur is None or cur.deleted or cur.body is None:
            continue  # changed since it was listed
        body = json.loads(cur.body)
        new = _repoint(body, src, tgt, ctx.base)
        if new != body:
            ctx.access.check_write(t, new)
            tx.update(t, i, new)
    # the DICOM index follows the studies that moved (and those not yet linked to an ImagingStudy)
    moved_studies = [i for t, i in moving if t == "ImagingStudy"]
    c.port(ctx, "imaging").move_studies(tx.conn, src, tgt, moved_studies)
    src_links = [l for l in source.get("link") or [] if c.ref_id(l.get("other"), "Patient", ctx.base) != tgt]
    tx.update("Patient", src, {**source, "active": False,
                               "link": [*src_links, {"other": {"reference": f"Patient/{tgt}"}, "type": "replaced-by"}]})
    final = dict(result if result is not None else target)
    links = [l for l in final.get("link") or [] if c.ref_id(l.get("other"), "Patient", ctx.base) != src]
    final["link"] = [*links, {"other": {"reference": f"Patient/{src}"}, "type": "replaces"}]
    try:
        final = validate_resource(final, "Patient")
    except InvalidResource as exc:
        raise FhirError(exc.status, exc.issues) from None  # rolls back everything above
    ctx.access.check_write("Patient", final)
    stored, _ = tx.update("Patient", tgt, final)
    c.audit(tx, ctx, "U", [f"Patient/{src}", f"Patient/{tgt}"], "merge", f"{len(moving)} resources moved")
    return FhirResponse(200, c.parameters(("outcome", f"Merged: {len(moving)} resources moved"),
                                          ("result", json.loads(stored.body)), *[("moved", r) for r in moved_refs]))
