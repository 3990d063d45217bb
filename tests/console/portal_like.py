"""Signing in to the portal as a patient (the other side of a console conversation)."""
from __future__ import annotations

import re
from typing import Any


def portal_csrf(c: Any) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get("/portal/messages").text).group(1)


def portal_login(app: Any, username: str, password: str = "demo-pass-1") -> Any:
    c = app.test_client()
    r = c.get("/portal/login")
    token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = c.post("/portal/login", data={"csrf": token, "username": username, "password": password})
    assert r.status_code == 303, r.text[:500]
    return c
