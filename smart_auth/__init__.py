"""SMART on FHIR authorization server: clients, users, grants, tokens, scopes, launch, keys.

`install(app)` adds `/auth/*`, `/.well-known/openid-configuration` and
`/fhir/.well-known/smart-configuration`; `before_fhir_request`/`after_fhir_request` guard the
FHIR blueprint; `access_for_request()` is the policy of the current FHIR request.
"""
from __future__ import annotations

from typing import Any

from smart_auth.fhir import (
    INSECURE_NO_AUTH, access_for_request, after_fhir_request, before_fhir_request, build_policy, lean_access, policy_for,
)
from smart_auth import revocation_signal, store
from smart_auth.activation import must_change_password
from smart_auth.bearer import token_checks
from smart_auth.links import live_patients
from smart_auth.logins import LoginDirectory
from smart_auth.ratelimit import blocked_for, record_failure
from smart_auth.store import (
    SESSION_SECONDS, LoginError, add_client, add_initial_token, add_user, check_login, end_session, get_client,
    get_session, get_user, hash_password, mint_launch, new_session, now as epoch_seconds, rotate_key, server_secret,
    set_password, user_named, user_on, verify_hash,
)
from smart_auth.tables import auth_user
from smart_auth.views import install_routes


LINK_TYPES = frozenset({"RelatedPerson"})  # resources whose changes can end a login's patient links


class LinksChanged:
    """After a commit that wrote a guardian link: every worker on every host revalidates its
    cached tokens, which re-derives their patients from the live links (smart_auth.links).

    After the commit, in its own transaction: a check made in between still reads the new links
    (they are committed) and is made under the old stamp, which the bump then retires."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, written: set[str]) -> None:
        if written & LINK_TYPES:
            revocation_signal.settle(self.engine, store.bump_revocations(self.engine))


def install(app: Any) -> None:
    services = app.extensions["fhirserver"]
    repo = services.repo
    token_checks(services)  # this app's cached token checks (services.tokens), never another app's
    if not any(isinstance(hook, LinksChanged) for hook in repo.after_commit):
        repo.after_commit.append(LinksChanged(repo.engine))
    install_routes(app)


__all__ = ["LoginDirectory", "access_for_request", "add_client", "add_initial_token", "add_user",
           "after_fhir_request", "before_fhir_request", "install", "lean_access", "mint_launch", "policy_for",
           "rotate_key"]
__all__ += ["INSECURE_NO_AUTH", "auth_user", "build_policy", "live_patients", "must_change_password"]
# The portal's and the console's sign-in, sessions, signed links and banners, and login rate limits.
__all__ += ["SESSION_SECONDS", "LoginError", "blocked_for", "check_login", "end_session", "epoch_seconds",
            "get_client", "get_session", "get_user", "hash_password", "new_session", "record_failure",
            "server_secret", "set_password", "user_named", "user_on", "verify_hash"]
