"""Bearer tokens on the FHIR API, checked cheaply and safely with several workers.

A token is looked up by its SHA-256 in the database; the Principal built from it is cached in
the worker, per app (`TokenChecks`, kept on the app's Services), for at most `CHECK_TTL`
seconds together with the token's expiry. Every revocation bumps a stamp in the database
(`smart_auth.revocation_signal`, followed through LISTEN/NOTIFY on PostgreSQL), and a cached
entry is only trusted while that stamp is unchanged, so a revocation in any worker on any host
sharing the database takes effect at once. Removing a guardian's RelatedPerson link bumps the
same stamp (`smart_auth.install` hooks the repository's commits), and a (re)validation
re-derives the token's patients from the login's live links.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fhirserver.access import Principal, parse_scopes
from smart_auth import revocation_signal
from smart_auth.links import live_context
from smart_auth.store import digest, now
from smart_auth.tables import auth_token

# How long a cached check is trusted at most. A revocation takes effect at once through the
# revocation stamp, whatever the TTL; the TTL bounds only what no stamp announces (e.g. a token
# revoked by a host that cannot bump this host's stamp). Short TTLs cost a database check per
# token and worker every TTL: with hundreds of live tokens, 5 s meant most reads were re-checks.
CHECK_TTL = 60.0
CACHE_MAX = 4096  # checked tokens kept per app (the oldest check goes first)


class _Checked:
    """One validated token: its Principal, until when it holds, and when and under which
    revocation stamp it was checked. `policy` is the access policy built for the Principal, kept
    by the request layer when that policy depends on nothing but the Principal
    (`smart_auth.fhir`), so a cached token also skips compiling its policy."""

    __slots__ = ("principal", "expires_at", "checked", "stamp", "policy")

    def __init__(self, principal: Principal, expires_at: int, checked: float, stamp: int) -> None:
        self.principal, self.expires_at, self.checked, self.stamp = principal, expires_at, checked, stamp
        self.policy: Any = None


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


class TokenChecks:
    """The cached token checks of one app (one database): `Services.tokens`, set by
    `smart_auth.install`. Per app, not per process: two apps in one process (tests, or a
    process serving two databases) must never answer one's token from the other's checks.

    `broadcast` is the app's `fhirserver.broadcast.Broadcast` for `engine`: the revocation stamp
    is read through it even outside an app context (the lean read path), so a cache hit costs
    no database round trip there either. Without one the stamp row is read on every check."""

    def __init__(self, engine: Engine, broadcast: Any = None, *, max_entries: int = CACHE_MAX) -> None:
        self.engine = engine
        self.broadcast = broadcast
        self.max_entries = max_entries
        # token hash -> its last check (bounded; the oldest entry goes first). OrderedDict's
        # get/pop/set/popitem are each atomic under the GIL, which is all the workers' threads need.
        self._entries: "OrderedDict[str, _Checked]" = OrderedDict()

    def _stamp(self) -> int:
        if self.broadcast is not None:
            return int(self.broadcast.stamp(revocation_signal.REVOCATIONS))
        return revocation_signal.stamp(self.engine)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str, *, base: str | None = None,
                     still_allowed: Callable[[Principal], bool] | None = None) -> Principal:
        """The Principal of a bearer token, or InvalidToken.

        Each (re)validation rebuilds the Principal from the token row and the login's live links
        (`smart_auth.links.live_context`), so a cached entry never outlives a revocation, a closed
        account or a removed guardian link by more than the revocation stamp allows.
        `still_allowed` re-checks what the links cannot tell (a launch patient still visible to a
        staff member), also only on (re)validation.
        """
        return self.checked(token, base=base, still_allowed=still_allowed).principal

    def trusted(self, token: str) -> "_Checked | None":
        """The cached check of a token while it may be trusted without the database (same
        revocation stamp, checked less than CHECK_TTL ago, not expired), else None."""
        hit = self._entries.get(digest(token))
        if hit is None:
            return None
        stamp = self._stamp()
        if stamp == -1 or hit.stamp != stamp or time.monotonic() - hit.checked >= CHECK_TTL \
                or hit.expires_at <= now():
            return None
        return hit

    def checked(self, token: str, *, base: str | None = None,
                still_allowed: Callable[[Principal], bool] | None = None) -> _Checked:
        """`authenticate`, returning the cache entry (the Principal and the slot for its policy)."""
        hit = self.trusted(token)
        if hit is not None:
            return hit
        h = digest(token)
        # read before the row: a revocation committed during the check retires this entry
        stamp = self._stamp()
        self._entries.pop(h, None)
        with self.engine.connect() as c:
            row = c.execute(_Q_FULL.where(auth_token.c.token_hash == h)).mappings().first()
            if row is None or row["kind"] != "access":
                raise InvalidToken("The access token is unknown")
            if row["revoked"]:
                raise InvalidToken("The access token was revoked")
            if row["expires_at"] <= now():
                raise InvalidToken("The access token expired")
            ctx = live_context(c, row["user_pk"], json.loads(row["context"]), base)
        if ctx is None:
            raise InvalidToken("The access token's grant no longer holds (account or patient link removed)")
        principal = principal_from(dict(row), ctx)
        if still_allowed is not None and not still_allowed(principal):
            raise InvalidToken("The access token's patient context is no longer visible to its user")
        entry = _Checked(principal, row["expires_at"], time.monotonic(), stamp)
        self._entries[h] = entry
        while len(self._entries) > self.max_entries:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                break
        return entry


def token_checks(services: Any) -> TokenChecks:
    """The app's token checks (`services.tokens`), made on first use for Services built
    without `smart_auth.install` (a test's, a CLI's)."""
    tokens = getattr(services, "tokens", None)
    if tokens is None:
        tokens = services.tokens = TokenChecks(services.repo.engine, getattr(services, "broadcast", None))
    return tokens


__all__ = ["CHECK_TTL", "InvalidToken", "TokenChecks", "principal_from", "token_checks"]
