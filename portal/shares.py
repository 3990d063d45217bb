"""Report share links: signed, expiring, revocable per report (the QR code on a report's PDF).

A link names the report, the patient acted for and the user who made it; whoever opens it sees
what that user may see now. The portal owns the revocation table; `$render` asks for a link
through `ShareLinks` (the shares port of `fhirserver.operations.ports`), never writing here.
"""
from __future__ import annotations

import time
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, insert, select

from portal.tables import portal_share_revocation as rev
from smart_auth import server_secret

SHARE_SALT = "portal-share"
SHARE_SECONDS = 7 * 24 * 3600


def _serializer(engine: Any) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(server_secret(engine, "portal-share"), salt=SHARE_SALT)


def share_token(engine: Any, report_id: str, patient_id: str | None, user_pk: int) -> str:
    """A signed link payload: the report, the patient acted for and the user sharing it."""
    return _serializer(engine).dumps({"r": report_id, "p": patient_id, "u": user_pk, "t": time.time()})


def check_share_token(engine: Any, token: str, max_age: int = SHARE_SECONDS) -> dict[str, Any] | None:
    """The payload of a valid, unexpired, unrevoked link; None otherwise."""
    try:
        data = _serializer(engine).loads(token, max_age=max_age)
    except BadSignature:  # includes SignatureExpired
        return None
    with engine.connect() as conn:
        revoked = conn.execute(select(rev.c.revoked_at).where(rev.c.report_id == data.get("r"))).scalar()
    if revoked is not None and float(data.get("t", 0)) <= revoked:
        return None
    return data


def revoke_shares(engine: Any, report_id: str) -> None:
    """Every link of the report made until now stops working (later ones work again)."""
    with engine.begin() as conn:
        conn.execute(delete(rev).where(rev.c.report_id == report_id))
        conn.execute(insert(rev).values(report_id=report_id, revoked_at=int(time.time()) + 1))


class ShareLinks:
    """The shares port: `$render` draws the link of the report it renders into the PDF."""

    def link_token(self, engine: Any, report_id: str, patient_id: str | None, user_pk: int) -> str:
        return share_token(engine, report_id, patient_id, user_pk)


__all__ = ["SHARE_SECONDS", "ShareLinks", "check_share_token", "revoke_shares", "share_token"]
