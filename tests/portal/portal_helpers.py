"""Helpers of the portal tests (a uniquely named module: tests/portal is not a package)."""
from __future__ import annotations

import re


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(app, username: str = "ana@example.org", password: str = "demo-pass-1"):  # noqa: ANN001, ANN201
    c = app.test_client()
    r = c.get("/portal/login")
    r = c.post("/portal/login", data={"csrf": csrf_of(r.text), "username": username, "password": password})
    assert r.status_code == 303, r.text[:500]
    return c


def admin_token(app) -> str:  # noqa: ANN001
    """An access token of an admin user (as a SMART app would hold one)."""
    from smart_auth import store

    eng = app.extensions["fhirserver"].repo.engine
    u = store.add_user(eng, username="admin@clinic.example", password="admin-pass-1", role="admin")
    tok, _pk = store.save_token(eng, kind="access", grant_id=store.new_token(8), client_id="fhirserver-portal",
                                user_pk=u["id"], scope="user/*.cruds", context={"role": "admin"}, lifetime=600)
    return tok
