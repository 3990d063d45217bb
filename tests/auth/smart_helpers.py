"""Helpers that drive the SMART flows through the Flask test client."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from smart_auth import store

FHIR = "http://testserver/fhir"
REDIRECT = "http://app.example/cb"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _field(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no field {name} in page:\n{page[:2000]}"
    return html.unescape(m.group(1))


def authorize(client: Any, *, client_id: str, scope: str, username: str, password: str = "password123",
              challenge: str, aud: str = FHIR, redirect_uri: str = REDIRECT, launch: str | None = None,
              untick: tuple[str, ...] = (), patient: str | None = None, state: str = "st4te") -> Any:
    """Run authorize -> login -> consent; returns the final response (a redirect)."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": scope, "state": state, "aud": aud, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    if launch:
        params["launch"] = launch
    r = client.get("/auth/authorize?" + urlencode(params))
    if r.status_code != 200:
        return r
    page = r.get_data(as_text=True)
    if 'name="username"' in page:
        r = client.post("/auth/login", data={"username": username, "password": password,
                                             "pending": _field(page, "pending"), "csrf": _field(page, "csrf")})
        if r.status_code != 200:
            return r
        page = r.get_data(as_text=True)
    scopes = [html.unescape(s) for s in re.findall(r'name="scope" value="([^"]*)"', page)]
    data: dict[str, Any] = {"pending": _field(page, "pending"), "csrf": _field(page, "csrf"),
                            "decision": "allow", "scope": [s for s in scopes if s not in untick]}
    radios = re.findall(r'name="patient" value="([^"]*)"', page)
    if patient or radios:
        data["patient"] = patient or radios[0]
    return client.post("/auth/consent", data=data)


def code_from(resp: Any) -> str:
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    q = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert "code" in q, resp.headers["Location"]
    return q["code"][0]


def token(client: Any, **form: str) -> Any:
    return client.post("/auth/token", data=form)


def seed(open_client: Any, resources: list[dict[str, Any]]) -> None:
    for res in resources:
        r = open_client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res,
                            headers={"Content-Type": "application/fhir+json"})
        assert r.status_code in (200, 201), r.get_data(as_text=True)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "Accept": "application/fhir+json"}


def standard_data() -> list[dict[str, Any]]:
    """Two organizations; patients a, b (org1), c (org2); guardian g of a and b; observations."""
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "org1", "name": "Clinic One"},
        {"resourceType": "Organization", "id": "org2", "name": "Clinic Two"},
        {"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "House"}]},
    ]
    for pid, org, name in (("a", "org1", "Ann"), ("b", "org1", "Ben"), ("c", "org2", "Cat")):
        out.append({"resourceType": "Patient", "id": pid, "name": [{"given": [name], "family": "Doe"}],
                    "managingOrganization": {"reference": f"Organization/{org}"}})
        for cat in ("laboratory", "vital-signs"):
            out.append({"resourceType": "Observation", "id": f"obs-{pid}-{cat}", "status": "final",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                  "code": cat}]}],
                        "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}})
    out.append({"resourceType": "RelatedPerson", "id": "g1", "patient": {"reference": "Patient/a"},
                "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                              "code": "GUARD"}]}]})
    out.append({"resourceType": "RelatedPerson", "id": "g2", "patient": {"reference": "Patient/b"}})
    return out


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e}


__all__ = ["FHIR", "REDIRECT", "authorize", "bearer", "code_from", "ids", "pkce", "seed", "standard_data",
           "store", "token", "json"]
