"""`$connected-apps` and `$revoke-app`: the SMART apps holding access to a patient's data.

A patient (or a guardian, for each child) sees every live authorization granted for that
patient, one row per grant (app, scopes, since, until, offline), and revokes one: the grant's
refresh and access tokens end at once, on every worker (the revocation stamp is bumped).
"""
from __future__ import annotations

from typing import Any

from fhirserver.errors import FhirError
from fhirserver.operations._common import audit, params, parameters, port, visible
from fhirserver.interactions import FhirResponse


def connected_apps(ctx: Any, tx: Any, req: Any) -> Any:
    if req.res_type != "Patient" or not req.res_id:
        raise FhirError(400, "$connected-apps runs on a Patient: /Patient/{id}/$connected-apps", "invalid")
    visible(ctx, tx, "Patient", req.res_id)
    from datetime import datetime, timezone

    def ts(t: int) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

    out = []
    for g in port(ctx, "logins").grants(tx.conn, req.res_id):
        out.append({"name": "app", "part": [
            {"name": "grant", "valueString": g["grant"]}, {"name": "client", "valueString": g["client"]},
            {"name": "name", "valueString": g["name"]}, {"name": "scope", "valueString": g["scope"]},
            {"name": "since", "valueDateTime": ts(g["since"])}, {"name": "until", "valueDateTime": ts(g["until"])},
            {"name": "offline", "valueBoolean": g["offline"]}]})
    return FhirResponse(200, {"resourceType": "Parameters", **({"parameter": out} if out else {})})


def revoke_app(ctx: Any, tx: Any, req: Any) -> Any:
    if req.method != "POST" or req.res_type != "Patient" or not req.res_id:
        raise FhirError(400, "POST /Patient/{id}/$revoke-app with a grant or client parameter", "invalid")
    visible(ctx, tx, "Patient", req.res_id)
    p = params(req)
    grant, client = p.get("grant"), p.get("client")
    if not grant and not client:
        raise FhirError(400, "Name the authorization to revoke: grant (from $connected-apps) or client", "required")
    logins = port(ctx, "logins")
    grants = [g for g in logins.grants(tx.conn, req.res_id)
              if (grant and g["grant"] == grant) or (client and g["client"] == client)]
    if not grants:
        raise FhirError(404, "No live authorization of that app for this patient", "not-found")
    ids = [g["grant"] for g in grants]
    logins.revoke_grants(tx, ids)
    audit(tx, ctx, "U", [f"Patient/{req.res_id}"], "revoke-app",
          "revoked: " + ", ".join(sorted({g["client"] for g in grants})))
    return FhirResponse(200, parameters(("revoked", len(ids))))
