"""Fixtures for $export: the auth-on app, backend-services clients with RS384 keys, the job runner."""
from __future__ import annotations

import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import text

from fhirserver.app import create_app
from smart_auth import store

TOKEN_URL = "http://testserver/auth/token"


@pytest.fixture(scope="session")
def export_app(settings, session_app):  # noqa: ANN001, ANN201
    return create_app(settings.replace(insecure_no_auth=False))


@pytest.fixture()
def xapp(export_app, app):  # noqa: ANN001, ANN201
    eng = export_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in ("auth_token", "auth_code", "auth_session", "auth_launch", "auth_jti", "auth_user",
                  "oauth_client", "job", "bulk_export"):
            c.execute(text(f"DELETE FROM {t}"))
    yield export_app
    export_app.extensions["fhirserver"].jobs.stop()


@pytest.fixture()
def run_jobs(xapp):  # noqa: ANN001, ANN201
    """Run every due job now, in this thread (the worker `serve` would run)."""
    services = xapp.extensions["fhirserver"]
    worker = services.jobs.worker(services, threads=1)
    return worker.run_pending


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
