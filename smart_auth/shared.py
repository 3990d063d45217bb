"""The app's shared stamps for the authorization server's caches (`fhirserver.broadcast`).

Clients (their CORS origins) and signing keys change at runtime, on any host or from the CLI:
the values are cached per process under a stamp each change bumps in the database, so every
host reloads them at its next use after the change. Outside an app (the CLI) nothing is cached.
"""
from __future__ import annotations

from typing import Any, Callable

from flask import current_app, has_app_context
from sqlalchemy.engine import Engine

CLIENTS = "auth.clients"   # a client was added or removed (origins)
KEYS = "auth.keys"         # a signing key was added or retired


def shared_for(engine: Engine) -> Any:
    """The app's `fhirserver.broadcast.Broadcast` for this engine, or None (no app: the CLI)."""
    if has_app_context():
        services = current_app.extensions.get("fhirserver")
        shared = getattr(services, "broadcast", None)
        if shared is not None and services.repo.engine is engine:
            return shared
    return None


def cached(engine: Engine, channel: str, key: str, load: Callable[[], Any]) -> Any:
    """`load()`, reused in this process until `channel` changes on any host."""
    shared = shared_for(engine)
    return load() if shared is None else shared.cached(channel, key, load)


__all__ = ["CLIENTS", "KEYS", "cached", "shared_for"]
