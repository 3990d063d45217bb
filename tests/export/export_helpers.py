"""Backend-services tokens for the export tests: an RS384 key, a client, a signed assertion."""
from __future__ import annotations

import time
import uuid

from joserfc import jwt
from joserfc.jwk import RSAKey

from smart_auth import store

TOKEN_URL = "http://testserver/auth/token"


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
