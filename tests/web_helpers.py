"""Form helpers shared by the portal and console tests (both sign in with a server-rendered form
carrying a CSRF token): one copy instead of one per test folder. A uniquely named module on the
test path (the test folders are not packages)."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    return CSRF_RE.search(html).group(1)


def portal_login(app: Any, username: str = "ana@example.org", password: str = "demo-pass-1") -> Any:
    """A test client signed in to the portal (a patient, a guardian)."""
    c = app.test_client()
    r = c.get("/portal/login")
    r = c.post("/portal/login", data={"csrf": csrf_of(r.text), "username": username, "password": password})
    assert r.status_code == 303, r.text[:500]
    return c


def portal_csrf(c: Any) -> str:
    """The signed-in portal session's CSRF token."""
    return csrf_of(c.get("/portal/messages").text)


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def shown_text(html: str | bytes) -> str:
    """What a reader sees of a page: its text nodes, without attributes. A short name ("Bob") checked
    against the raw HTML can match by chance inside a random CSRF token or a signed link's URL."""
    p = _TextOnly()
    p.feed(html.decode() if isinstance(html, bytes) else html)
    return " ".join(p.parts)
