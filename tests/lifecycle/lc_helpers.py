"""Helpers: sign in through the real SMART flow (authorize, login form, consent, token)."""
from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from smart_auth import store

FHIR = "http://testserver/fhir"
REDIRECT = "http://app.example/cb"
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
STAFF_SCOPE = "openid fhirUser user/*.cruds"
PATIENT_SCOPE = "openid fhirUser launch/patient patient/*.cruds"
# What a lifecycle test leaves: sign-ins, invitations, accounts, mail queued (children first).
LIFECYCLE_TABLES = ("auth_token", "auth_code", "auth_session", "auth_user", "oauth_client", "lifecycle_invitation",
                    "lifecycle_account", "lifecycle_email", "lifecycle_access_request", "notify_outbox")


def _field(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no field {name} in page:\n{page[:1500]}"
    return html.unescape(m.group(1))


def client_id(engine: Any, scope: str) -> str:
    return store.add_client(engine, name="test app", redirect_uris=[REDIRECT], scope=scope)["client_id"]


def login(c: Any, engine: Any, username: str, password: str, scope: str) -> Any:
    """The final response of the login form when it is not a consent page, else the token JSON."""
    c = c.application.test_client()  # a fresh browser: no session of another user
    cid = client_id(engine, scope)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = c.get("/auth/authorize?" + urlencode({
        "response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": scope, "state": "s",
        "aud": FHIR, "code_challenge": challenge, "code_challenge_method": "S256"}))
    page = r.get_data(as_text=True)
    r = c.post("/auth/login", data={"username": username, "password": password,
                                    "pending": _field(page, "pending"), "csrf": _field(page, "csrf")})
    if r.status_code != 200 or 'name="decision"' not in r.get_data(as_text=True) and "consent" not in \
            r.get_data(as_text=True).lower():
        return r
    page = r.get_data(as_text=True)
    scopes = [html.unescape(s) for s in re.findall(r'name="scope" value="([^"]*)"', page)]
    data: dict[str, Any] = {"pending": _field(page, "pending"), "csrf": _field(page, "csrf"),
                            "decision": "allow", "scope": scopes}
    radios = re.findall(r'name="patient" value="([^"]*)"', page)
    if radios:
        data["patient"] = radios[0]
    r = c.post("/auth/consent", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "client_id": cid, "code_verifier": verifier})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def H(tok: dict) -> dict:  # noqa: N802
    return {"Authorization": f"Bearer {tok['access_token']}", **JSON}


def params(**kw: Any) -> dict:
    out = []
    for k, v in kw.items():
        k = k.replace("_", "-")
        if isinstance(v, bool):
            out.append({"name": k, "valueBoolean": v})
        elif isinstance(v, dict) and "resourceType" in v:
            out.append({"name": k, "resource": v})
        elif isinstance(v, dict):
            out.append({"name": k, "valueReference": v})
        else:
            out.append({"name": k, "valueString": str(v)})
    return {"resourceType": "Parameters", "parameter": out}


def pval(body: dict, name: str) -> Any:
    for p in body.get("parameter", []):
        if p["name"] == name:
            for k, v in p.items():
                if k.startswith("value") or k == "resource":
                    return v
    return None


def link_in(body: str) -> str:
    m = re.search(r"https?://\S+/auth/activate\?token=\S+", body)
    assert m, body
    return m.group(0)
