"""Backend-services tokens for the export tests: an RS384 key, a client, a signed assertion."""
from __future__ import annotations

import time
import uuid

from joserfc import jwt
from joserfc.jwk import RSAKey

from smart_auth import store

TOKEN_URL = "http://testserver/auth/token"


def user_token(app, username: str, *, role: str, scope: str, fhir_user: str | None = None,
               organizations: tuple[str, ...] = ()) -> str:  # noqa: ANN001
    """A login (patient or staff) and an app token for it, through authorize -> login -> consent."""
    from tests.auth.smart_helpers import REDIRECT, authorize, code_from, pkce, token

    engine = app.extensions["fhirserver"].repo.engine
    store.add_user(engine, username=username, password="password123", role=role, fhir_user=fhir_user,
                   organizations=organizations)
    cid = store.add_client(engine, name=f"app-{username}", redirect_uris=[REDIRECT], scope=scope)["client_id"]
    c = app.test_client()
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope=scope, username=username, challenge=challenge))
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
              code_verifier=verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["access_token"]


def backend_token(app, *, scope: str = "system/*.rs", organization: str | None = None,
                  request_scope: str | None = None) -> str:  # noqa: ANN001
    """Register a backend service with an RS384 key and get a token by a signed client assertion."""
    engine = app.extensions["fhirserver"].repo.engine
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    cl = store.add_client(engine, name="EHR", auth_method="private_key_jwt",
                          jwks={"keys": [key.as_dict(private=False)]}, scope=scope, organization=organization)
    cid = cl["client_id"]
    t = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": TOKEN_URL, "exp": t + 240, "iat": t, "jti": uuid.uuid4().hex}
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    r = app.test_client().post("/auth/token", data={
        "grant_type": "client_credentials", "scope": request_scope or scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["access_token"]
