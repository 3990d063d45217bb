"""SMART on FHIR authorization server: clients, users, grants, tokens, scopes, launch, keys.

`install(app)` adds `/auth/*`, `/.well-known/openid-configuration` and
`/fhir/.well-known/smart-configuration`; `before_fhir_request`/`after_fhir_request` guard the
FHIR blueprint; `access_for_request()` is the policy of the current FHIR request.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from smart_auth.fhir import access_for_request, after_fhir_request, before_fhir_request, lean_access, policy_for
from smart_auth import store
from smart_auth.logins import LoginDirectory
from smart_auth.store import add_client, add_initial_token, add_user, mint_launch, rotate_key
from smart_auth.views import install_routes


LINK_TYPES = frozenset({"RelatedPerson"})  # resources whose changes can end a login's patient links


def _links_changed(written: set[str]) -> None:
    """After a commit that wrote a guardian link: every worker revalidates its cached tokens, which
    re-derives their patients from the live links (smart_auth.links)."""
    if written & LINK_TYPES:
        store.bump_revocations()


def install(app: Any) -> None:
    settings = app.extensions["fhirserver"].settings
    store.REVOCATION_FILE = Path(settings.data_dir).resolve() / "auth-revocations"
    repo = app.extensions["fhirserver"].repo
    if _links_changed not in repo.after_commit:
        repo.after_commit.append(_links_changed)
    install_routes(app)


__all__ = ["LoginDirectory", "access_for_request", "add_client", "add_initial_token", "add_user",
           "after_fhir_request", "before_fhir_request", "install", "lean_access", "mint_launch", "policy_for",
           "rotate_key"]
