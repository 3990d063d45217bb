"""Who can see my data: consents granted and revoked, access requests, the access log."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, request

from fhirserver.errors import FhirError
from fhirserver.operations import human_name
from portal import core
from portal.access_log import readable
from portal.web import _, back, page, pid, ref_id, when


def _share_state() -> dict[str, Any]:
    f = core.user_fhir()
    consents = [c for c in f.search("Consent", [("patient", pid()), ("_count", "100")]) if c.get("status") == "active"]
    orgs = {o["id"]: o for o in f.search("Organization", [("_count", "100")])}
    for c in consents:
        actor = ((c.get("provision") or {}).get("actor") or [{}])[0].get("reference", {}).get("reference", "")
        c["_org"] = human_name(orgs.get(ref_id(actor, "Organization") or "")) or actor
        c["_imaging"] = any(k.get("code") == "ImagingStudy" for k in (c.get("provision") or {}).get("class") or [])
    try:
        reqs = f.operation("Patient", pid(), "$access-requests")
        pending = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r["part"]}
                   for r in reqs.get("parameter") or []]
    except FhirError:
        pending = []
    for r in pending:
        oid = ref_id(r.get("organization"), "Organization") or ""
        r["_org"] = human_name(orgs.get(oid)) or oid
    return {"consents": consents, "orgs": list(orgs.values()), "pending": pending}


def sharing() -> Response:
    return page("sharing.html", **_share_state())


def grant() -> Response:
    from fhirserver.operations import sharing_consent as _consent

    org = request.form.get("organization", "")
    state = _share_state()
    if org not in {o["id"] for o in state["orgs"]}:
        return page("sharing.html", 400, form=request.form, errors={"organization": _("Choose an organization.")},
                    **state)
    core.user_fhir().create("Consent", _consent(pid(), org, request.form.get("what") == "imaging",
                                                "granted by the patient in the portal"))
    return back("portal.sharing", _("Access was granted."))


def revoke(cid: str) -> Response:
    f = core.user_fhir()
    c = f.read("Consent", cid)
    if c is None:
        abort(404)
    f.update("Consent", cid, {**c, "status": "inactive"})
    return back("portal.sharing", _("Access was revoked."))


def respond(rid: str) -> Response:
    decision = "accept" if request.form.get("decision") == "accept" else "reject"
    core.user_fhir().operation("Patient", pid(), "$respond-access", method="POST", body={
        "resourceType": "Parameters", "parameter": [{"name": "request", "valueString": rid},
                                                    {"name": "decision", "valueString": decision}]})
    return back("portal.sharing", _("Access was granted.") if decision == "accept" else _("Access was revoked."))


def access_log() -> Response:
    try:
        log = core.user_fhir().operation("Patient", pid(), "$access-log", [("_count", "200")])
    except FhirError:
        log = {}
    names = core.Fhir(g.policy, audit=False)  # looking names up is no access to report

    def read_name(ref: str) -> dict | None:
        kind, rid = ref.split("/", 1)
        return names.read(kind, rid) if kind in ("Practitioner", "RelatedPerson", "Patient") else None

    own = {x for x in ((g.user or {}).get("fhir_user"), f"Patient/{pid()}") if x}
    return page("access_log.html", events=readable(log or {}, own, read_name, _, when))


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/sharing', sharing, ['GET']),
        ('/sharing/grant', grant, ['POST']),
        ('/sharing/<cid>/revoke', revoke, ['POST']),
        ('/sharing/requests/<rid>', respond, ['POST']),
        ('/access-log', access_log, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
