"""The logins port of patient-wide operations (`fhirserver.operations.ports.Logins`).

The FHIR operations that invite, close, reactivate, erase a patient or revoke an app's access
change logins and tokens through this class, on their own transaction (a storage Tx), so those
rows stay this package's and the operation stays one transaction; a revocation bumps the stamp
in that transaction and answers only once every host was told (smart_auth.revocation_signal).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from sqlalchemy import delete, insert, or_, select, update

from smart_auth import store
from smart_auth.tables import auth_code, auth_session, auth_token, auth_user, oauth_client

_USER_COLUMNS = (auth_user.c.pk, auth_user.c.username, auth_user.c.role, auth_user.c.fhir_user,
                 auth_user.c.patients, auth_user.c.active, auth_user.c.password_hash)


def _row(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    try:
        out["patients"] = json.loads(out.get("patients") or "[]")
    except ValueError:
        out["patients"] = []
    return out


class LoginDirectory:
    """smart_auth's logins, tokens and grants as the operations see them."""

    def find(self, conn: Any, *, user_pk: int | None = None, username: str | None = None) -> dict[str, Any] | None:
        if user_pk is None and username is None:
            return None
        q = select(*_USER_COLUMNS)
        q = q.where(auth_user.c.pk == user_pk) if user_pk is not None else q.where(auth_user.c.username == username)
        return _row(conn.execute(q).mappings().first())

    def verify_password(self, conn: Any, user_pk: int | None, password: str | None) -> bool:
        user = self.find(conn, user_pk=user_pk) if user_pk is not None else None
        return bool(user and password and store.verify_hash(user["password_hash"], str(password)))

    def create(self, conn: Any, *, username: str, password: str, role: str, fhir_user: str,
               patients: list[str], active: bool) -> int:
        return conn.execute(insert(auth_user).values(
            username=username, password_hash=store.hash_password(password), role=role, fhir_user=fhir_user,
            patients=json.dumps(patients), organizations="[]", display_name=None, failed_logins=0,
            locked_until=0, active=active, created=store.now()).returning(auth_user.c.pk)).scalar_one()

    def change(self, tx: Any, user_pk: int, *, patients: list[str] | None = None,
               password: str | None = None, active: bool | None = None) -> None:
        values: dict[str, Any] = {}
        if patients is not None:
            values["patients"] = json.dumps(patients)
        if password is not None:
            values["password_hash"] = store.hash_password(password)
        if active is not None:
            values["active"] = active
        if values:
            tx.conn.execute(update(auth_user).where(auth_user.c.pk == user_pk).values(**values))
        if active is False:
            self.revoke_tokens(tx, user_pk)

    def of_profile(self, conn: Any, fhir_user: str, role: str | None = None) -> list[int]:
        q = select(auth_user.c.pk).where(auth_user.c.fhir_user == fhir_user)
        if role is not None:
            q = q.where(auth_user.c.role == role)
        return sorted(conn.execute(q).scalars())

    def erase(self, tx: Any, *, user_pks: Iterable[int], usernames: Iterable[str], patient_id: str) -> list[int]:
        conn = tx.conn
        users = set(user_pks)
        names = sorted(set(usernames))
        users.update(conn.execute(select(auth_user.c.pk).where(or_(
            auth_user.c.fhir_user == f"Patient/{patient_id}", auth_user.c.username.in_(names)))).scalars())
        for u in sorted(users):
            for table, col in ((auth_token, auth_token.c.user_pk), (auth_code, auth_code.c.user_pk),
                               (auth_session, auth_session.c.user_pk), (auth_user, auth_user.c.pk)):
                conn.execute(delete(table).where(col == u))
        self._forget_in_guardians(conn, patient_id)
        self._revoked(tx)
        return sorted(users)

    @staticmethod
    def _forget_in_guardians(conn: Any, patient_id: str) -> None:
        """Guardians keep their login (it is theirs), without the erased child."""
        for upk, text in conn.execute(select(auth_user.c.pk, auth_user.c.patients).where(
                auth_user.c.patients.like(f'%"{patient_id}"%'))).all():
            try:
                kids = json.loads(text or "[]")
            except ValueError:
                continue
            if patient_id in kids:
                conn.execute(update(auth_user).where(auth_user.c.pk == upk).values(
                    patients=json.dumps([k for k in kids if k != patient_id])))

    @staticmethod
    def _revoked(tx: Any) -> None:
        store.settle_revocations(tx, store.bump_revocations(tx.conn))

    def revoke_tokens(self, tx: Any, user_pk: int) -> None:
        tx.conn.execute(update(auth_token).where(auth_token.c.user_pk == user_pk).values(revoked=True))
        self._revoked(tx)

    def grants(self, conn: Any, patient_id: str) -> list[dict[str, Any]]:
        rows = conn.execute(select(auth_token.c.grant_id, auth_token.c.client_id, auth_token.c.kind,
                                   auth_token.c.scope, auth_token.c.context, auth_token.c.issued_at,
                                   auth_token.c.expires_at, oauth_client.c.name)
                            .join(oauth_client, oauth_client.c.client_id == auth_token.c.client_id, isouter=True)
                            .where(auth_token.c.revoked.is_(False), auth_token.c.expires_at > store.now()))
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
            g["offline"] = g["offline"] or (kind == "refresh" and "offline_access" in (scope or ""))
        return sorted(grants.values(), key=lambda g: g["since"])

    def revoke_grants(self, tx: Any, grant_ids: list[str]) -> None:
        tx.conn.execute(update(auth_token).where(auth_token.c.grant_id.in_(grant_ids)).values(revoked=True))
        self._revoked(tx)


__all__ = ["LoginDirectory"]
