"""Helpers of the portal tests (a uniquely named module: tests/portal is not a package)."""
from __future__ import annotations

import re


from web_helpers import csrf_of, portal_login as login  # noqa: F401  (the portal tests' names)


def admin_token(app) -> str:  # noqa: ANN001
    """An access token of an admin user (as a SMART app would hold one)."""
    from smart_auth import store

    eng = app.extensions["fhirserver"].repo.engine
    u = store.add_user(eng, username="admin@clinic.example", password="admin-pass-1", role="admin")
    tok, _pk = store.save_token(eng, kind="access", grant_id=store.new_token(8), client_id="fhirserver-portal",
                                user_pk=u["id"], scope="user/*.cruds", context={"role": "admin"}, lifetime=600)
    return tok


# -- the browser tests' shared parts ---------------------------------------------------------------
import base64  # noqa: E402
import hashlib  # noqa: E402
import html  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import parse_qs, urlencode, urlsplit  # noqa: E402

import requests  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ART = Path(__file__).parent / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def field(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no field {name} in page:\n{page[:1500]}"
    return html.unescape(m.group(1))


def staff_token(root: str, username: str | None = None) -> str:
    """A staff member's access token (Dr. Moreno's by default) through the real SMART flow (the
    demo staff app, PKCE)."""
    from portal.demo import DEMO_PASSWORD, STAFF_APP, STAFF_APP_REDIRECT, STAFF_LOGIN, STAFF_SCOPE

    s = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = s.get(root + "/auth/authorize?" + urlencode({
        "response_type": "code", "client_id": STAFF_APP, "redirect_uri": STAFF_APP_REDIRECT, "scope": STAFF_SCOPE,
        "state": "s", "aud": root + "/fhir", "code_challenge": challenge, "code_challenge_method": "S256"}),
        timeout=30)
    assert r.status_code == 200, r.text[:800]
    r = s.post(root + "/auth/login", data={"username": username or STAFF_LOGIN, "password": DEMO_PASSWORD,
                                           "pending": field(r.text, "pending"), "csrf": field(r.text, "csrf")},
               allow_redirects=False, timeout=30)
    if r.status_code == 200:  # the consent page
        scopes = [html.unescape(x) for x in re.findall(r'name="scope" value="([^"]*)"', r.text)]
        r = s.post(root + "/auth/consent", data={"pending": field(r.text, "pending"), "csrf": field(r.text, "csrf"),
                                                 "decision": "allow", "scope": scopes},
                   allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text[:800]
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    r = s.post(root + "/auth/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": STAFF_APP_REDIRECT, "client_id": STAFF_APP,
                                           "code_verifier": verifier}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def sign_in(page, root: str, email: str, password: str = "demo-pass-1") -> None:  # noqa: ANN001
    page.goto(root + "/portal/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("nav")
