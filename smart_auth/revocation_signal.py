"""The revocation signal the bearer cache trusts: a stamp every host sees change at once.

Every revocation (a token or refresh family revoked, a code replayed, an account closed or
erased, an app's grant withdrawn, a guardian link removed, a logout) bumps the
`auth.revocations` stamp in the database (`fhirserver.broadcast`); a cached token check is
trusted only while the stamp it was made under is still current. On PostgreSQL each process
follows the stamp through LISTEN/NOTIFY and falls back to reading the row whenever its
listener is not confirmed up, so a lost notification can never keep a revoked token alive.
"""
from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from fhirserver.broadcast import publish, read_stamp
from smart_auth.shared import shared_for

REVOCATIONS = "auth.revocations"


def bump(where: Engine | Connection) -> int:
    """Announce a revocation; with a Connection, as the last statement of its transaction."""
    return publish(where, REVOCATIONS)


def settle(engine: Engine, stamp: int) -> None:
    """After the revocation committed: answer only once the notification is out (see
    `fhirserver.broadcast.Broadcast.settle`)."""
    shared = shared_for(engine)
    if shared is not None:
        shared.settle(REVOCATIONS, stamp)


def stamp(engine: Engine) -> int:
    """The revocation stamp now (-1: unknown, trust no cached check)."""
    shared = shared_for(engine)
    return shared.stamp(REVOCATIONS) if shared is not None else read_stamp(engine, REVOCATIONS)


__all__ = ["REVOCATIONS", "bump", "settle", "stamp"]
