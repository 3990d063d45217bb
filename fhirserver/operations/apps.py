"""`$connected-apps` and `$revoke-app`: the SMART apps holding access to a patient's data.

A patient (or a guardian, for each child) sees every live authorization granted for that
patient, one row per grant (app, scopes, since, until, offline), and revokes one: the grant's
refresh and access tokens end at once, on every worker (the revocation stamp is bumped).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from fhirserver.errors import FhirError
from fhirserver.operations._common import audit, now, params, parameters, visible
from fhirserver.interactions import FhirResponse


def _grants(conn: Any, patient_id: str) -> dict[str, dict[str, Any]]:
    from smart_auth.tables import auth_token, oauth_client

    rows = conn.execute(select(auth_token.c.grant_id, auth_token.c.client_id, auth_token.c.kind,
                               auth_token.c.scope, auth_token.c.context, auth_token.c.issued_at,
                               auth_token.c.expires_at, oauth_client.c.name)
                        .join(oauth_client, oauth_client.c.client_id == auth_token.c.client_id, isouter=True)
                        .where(auth_token.c.revoked.is_(False), auth_token.c.expires_at > now()))
    grants: dict[str, dict[str, Any]] = {}
    for grant_id, client_id, kind, scope, context, issued, expires, name in rows:
        try:
            ctx = json.loads(context or "{}")
        except ValueError:
            continue
        if patient_id != ctx.get("patient") and patient_id not in (ctx.get("patients") or []):
            continue
        g = grants.setdefault(grant_id, {"grant": grant_id, "client": client_id, "name": name or client_id,
                                         "scope": scope, "since": issued, "until": expires, "offline": False})
        g["since"] = min(g["since"], issued)
        g["until"] = max(g["until"], expires)
        g["offline"] = g["offline"] or (kind == "refresh" and "offline_access" in scope)
    return grants


def connected_apps(ctx: Any, tx: Any, req: Any) -> Any:
    if req.res_type != "Patient" or not req.res_id:
        raise FhirError(400, "$connected-apps runs on a Patient: /Patient/{id}/$connected-apps", "invalid")
    visible(ctx, tx, "Patient", req.res_id)
    from datetime import datetime, timezone

    def ts(t: int) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

    out = []
    for g in sorted(_grants(tx.conn, req.res_id).values(), key=lambda g: g["since"]):
        out.append({"name": "app", "part": [
            {"name": "grant", "valueString": g["grant"]}, {"name": "client", "valueString": g["client"]},
            {"name": "name", "valueString": g["name"]}, {"name": "scope", "valueString": g["scope"]},
            {"name": "since", "valueDateTime": ts(g["since"])}, {"name": "until", "valueDateTime": ts(g["until"])},
            {"name": "offline", "valueBoolean": g["offline"]}]})
    return FhirResponse(200, {"resourceType": "Parameters", **({"parameter": out} if out else {})})


def revoke_app(ctx: Any, tx: Any, req: Any) -> Any:
    from smart_auth import store
    from smart_auth.tables import auth_token

    if req.method != "POST" or req.res_type != "Patient" or not req.res_id:
        raise FhirError(400, "POST /Patient/{id}/$revoke-app with a grant or client parameter", "invalid")
    visible(ctx, tx, "Patient", req.res_id)
    p = params(req)
    grant, client = p.get("grant"), p.get("client")
    if not grant and not client:
        raise FhirError(400, "Name the authorization to revoke: grant (from $connected-apps) or client", "required")
    grants = [g for g in _grants(tx.conn, req.res_id).values()
              if (grant and g["grant"] == grant) or (client and g["client"] == client)]
    if not grants:
        raise FhirError(404, "No live authorization of that app for this patient", "not-found")
    ids = [g["grant"] for g in grants]
    tx.conn.execute(update(auth_token).where(auth_token.c.grant_id.in_(ids)).values(revoked=True))
    store.settle_revocations(tx, store.bump_revocations(tx.conn))
    audit(tx, ctx, "U", [f"Patient/{req.res_id}"], "revoke-app",
          "revoked: " + ", ".join(sorted({g["client"] for g in grants})))
    return FhirResponse(200, parameters(("revoked", len(ids))))
