"""Bearer tokens on the FHIR API, checked cheaply and safely with several workers.

A token is looked up by its SHA-256 in the database; the Principal built from it is cached in
the worker for at most `CHECK_TTL` seconds together with the token's expiry. Every revocation
rewrites a small file in the data folder (`store.bump_revocations`), and a cached entry is only
trusted while that file's stamp is unchanged, so a revocation in any worker on this host takes
effect at once; workers on other hosts sharing the database see it within `CHECK_TTL`.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fhirserver.access import Principal, parse_scopes
from smart_auth import store
from smart_auth.store import digest, now
from smart_auth.tables import auth_token

CHECK_TTL = 5.0
_CACHE_MAX = 4096
# token hash -> (principal, expires_at, checked_at monotonic, revocation stamp)
_cache: "OrderedDict[str, tuple[Principal, int, float, int]]" = OrderedDict()


class InvalidToken(Exception):
    pass


def principal_from(row: dict[str, Any], context: dict[str, Any]) -> Principal:
    texts = tuple((row["scope"] or "").split())
    return Principal(
        client_id=row["client_id"], role=context.get("role", "patient"), scopes=tuple(parse_scopes(texts)),
        scope_text=row["scope"], patient=context.get("patient"),
        patients=tuple(context.get("patients") or ()),
        organizations=tuple(context.get("organizations") or ()), fhir_user=context.get("fhirUser"),
        user_pk=row.get("user_pk"), token_pk=row.get("pk"))


_Q_FULL = select(auth_token.c.pk, auth_token.c.revoked, auth_token.c.expires_at, auth_token.c.kind,
                 auth_token.c.client_id, auth_token.c.user_pk, auth_token.c.scope, auth_token.c.context)


def authenticate(engine: Engine, token: str) -> Principal:
    h = digest(token)
    stamp = store.revocation_stamp()
    hit = _cache.get(h)
    if hit is not None:
        principal, expires_at, checked, seen_stamp = hit
        if stamp != -1 and seen_stamp == stamp and time.monotonic() - checked < CHECK_TTL:
            if expires_at <= now():
                _cache.pop(h, None)
                raise InvalidToken("The access token expired")
            return principal
    with engine.connect() as c:
        row = c.execute(_Q_FULL.where(auth_token.c.token_hash == h)).mappings().first()
    if row is None or row["kind"] != "access":
        raise InvalidToken("The access token is unknown")
    if row["revoked"]:
        _cache.pop(h, None)
        raise InvalidToken("The access token was revoked")
    if row["expires_at"] <= now():
        _cache.pop(h, None)
        raise InvalidToken("The access token expired")
    principal = hit[0] if hit is not None else principal_from(dict(row), json.loads(row["context"]))
    _cache[h] = (principal, row["expires_at"], time.monotonic(), stamp)
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return principal
