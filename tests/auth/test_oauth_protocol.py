"""The OAuth 2.0 / OpenID Connect protocol details a client notices: PKCE S256 from every client,
RFC 6749 error bodies, OpenID id_token claims, RFC 7523 keys from a JWKS URL, RFC 7662/7009 edge
cases and RFC 7591 registration. Each refusal follows the same request succeeding."""
from __future__ import annotations

import html
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import built_app
from smart_helpers import FHIR, REDIRECT, authorize, bearer, code_from, ids, pkce, seed, standard_data, store, token

TOKEN_URL = "http://testserver/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _client(engine, scope="launch/patient patient/*.rs openid fhirUser profile offline_access", **kw):  # noqa: ANN001
    return store.add_client(engine, name="App", redirect_uris=[REDIRECT], scope=scope, **kw)


def _ann(engine) -> None:  # noqa: ANN001
    store.add_user(engine, username="ann", password="password123", role="patient", fhir_user="Patient/a",
                   display_name="Ann Doe")


def _authorize_query(c, cid: str, **extra: str) -> dict[str, list[str]] | int:  # noqa: ANN001
    """GET /auth/authorize; the redirect's query, or the status when it does not redirect."""
    params = {"response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": "patient/*.rs",
              "state": "s1", "aud": FHIR, **extra}
    params = {k: v for k, v in params.items() if v is not None}
    r = c.get("/auth/authorize?" + urlencode(params))
    if r.status_code != 302:
        return r.status_code
    return parse_qs(urlsplit(r.headers["Location"]).query)


def _field(page: str, name: str) -> str:
    return html.unescape(re.search(rf'name="{name}" value="([^"]*)"', page).group(1))


def _exchange(c, cid: str, code: str, verifier: str, **kw: Any) -> Any:  # noqa: ANN001
    return c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                       "client_id": cid, "code_verifier": verifier}, **kw)


# -- PKCE: S256 from every client ---------------------------------------------------------------
def test_pkce_s256_is_required_from_confidential_clients_too(sapp, engine, open_client):
    seed(open_client, standard_data())
    _ann(engine)
    c = sapp.test_client()
    conf = _client(engine, auth_method="client_secret_basic")
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=conf["client_id"], scope="patient/*.rs", username="ann",
                               challenge=challenge))
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "code_verifier": verifier}, auth=(conf["client_id"], conf["client_secret"]))
    assert r.status_code == 200, r.get_data(as_text=True)
    # without a challenge, or with plain: refused at authorize, by redirect, with the state
    for extra in ({}, {"code_challenge": challenge, "code_challenge_method": "plain"},
                  {"code_challenge": challenge}):
        q = _authorize_query(c, conf["client_id"], **extra)
        assert isinstance(q, dict) and q["error"] == ["invalid_request"] and q["state"] == ["s1"], (extra, q)
        assert "code" not in q
    # a confidential client that leaves out the verifier gets no token
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=conf["client_id"], scope="patient/*.rs", username="ann",
                               challenge=challenge))
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
               auth=(conf["client_id"], conf["client_secret"]))
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    assert r.get_json()["error_description"] and r.headers["Cache-Control"] == "no-store"


def test_token_endpoint_errors_are_rfc6749_json(sapp, engine):
    c = sapp.test_client()
    cid = _client(engine)["client_id"]
    cases = [({"grant_type": "password", "username": "ann", "password": "x", "client_id": cid}, 400,
              "unsupported_grant_type"),
             ({"grant_type": "authorization_code", "client_id": cid, "redirect_uri": REDIRECT}, 400, "invalid_request"),
             ({"grant_type": "authorization_code", "code": "x", "client_id": "nobody"}, 401, "invalid_client"),
             ({"grant_type": "client_credentials", "client_id": cid}, 401, "invalid_client")]
    for form, status, error in cases:
        r = c.post("/auth/token", data=form)
        body = r.get_json()
        assert r.status_code == status and body["error"] == error, (form, r.status_code, body)
        assert isinstance(body.get("error_description", ""), str) and r.headers["Cache-Control"] == "no-store"


def test_unknown_client_or_unregistered_redirect_never_redirects(sapp, engine):
    c = sapp.test_client()
    cid = _client(engine)["client_id"]
    _v, challenge = pkce()
    q = _authorize_query(c, cid, code_challenge=challenge, code_challenge_method="S256", response_type="token")
    assert isinstance(q, dict) and q["error"] == ["unsupported_response_type"]
    assert _authorize_query(c, "nobody", code_challenge=challenge, code_challenge_method="S256") == 400
    assert _authorize_query(c, cid, code_challenge=challenge, code_challenge_method="S256",
                            redirect_uri="http://evil.example/cb") == 400
    # prompt=none without a signed-in user: login_required, back to the client
    q = _authorize_query(c, cid, code_challenge=challenge, code_challenge_method="S256", prompt="none",
                         scope="openid patient/*.rs")
    assert isinstance(q, dict) and q["error"] == ["login_required"]


# -- OpenID Connect -------------------------------------------------------------------------------
def test_id_token_claims_nonce_and_refresh(sapp, engine, open_client):
    seed(open_client, standard_data())
    _ann(engine)
    c = sapp.test_client()
    cid = _client(engine)["client_id"]
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "state": "s", "aud": FHIR,
              "scope": "launch/patient patient/*.rs openid fhirUser profile offline_access",
              "code_challenge": challenge, "code_challenge_method": "S256", "nonce": "n-0S6_WzA2Mj"}
    authorize(c, client_id=cid, scope="patient/*.rs", username="ann", challenge=challenge)  # signs in
    page = c.get("/auth/authorize?" + urlencode(params)).get_data(as_text=True)  # now straight to consent
    r = c.post("/auth/consent", data={"pending": _field(page, "pending"), "csrf": _field(page, "csrf"),
                                      "decision": "allow", "scope": re.findall(r'name="scope" value="([^"]*)"', page)})
    tok = _exchange(c, cid, code_from(r), verifier).get_json()
    keys = KeySet.import_key_set(c.get("/auth/jwks").get_json())
    claims = jwt.decode(tok["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["aud"] == cid and claims["iss"] == "http://testserver"
    assert claims["fhirUser"] == f"{FHIR}/Patient/a" and claims["name"] == "Ann Doe" and claims["at_hash"]
    assert claims["exp"] > time.time() and claims["sub"]
    # the same nonce again for this client: a replay, refused
    q = _authorize_query(c, cid, code_challenge=challenge, code_challenge_method="S256", nonce="n-0S6_WzA2Mj",
                         scope="openid patient/*.rs")
    assert isinstance(q, dict) and q["error"] == ["invalid_request"]
    # a refresh keeps the identity: a new id_token for the same user
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid)
    assert r.status_code == 200
    again = jwt.decode(r.get_json()["id_token"], keys, algorithms=["RS256"]).claims
    assert again["sub"] == claims["sub"] and again["fhirUser"] == claims["fhirUser"]
    # without fhirUser in the scope, no fhirUser claim
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="openid patient/*.rs", username="ann", challenge=challenge))
    plain = jwt.decode(_exchange(c, cid, code, verifier).get_json()["id_token"], keys, algorithms=["RS256"]).claims
    assert "fhirUser" not in plain and plain["sub"] == claims["sub"]


# -- RFC 7523 with a JWKS URL -------------------------------------------------------------------------
@pytest.fixture()
def jwks_server() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"jwks": {"keys": []}, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state["hits"] += 1
            body = json.dumps(state["jwks"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}/jwks.json"
    yield state
    srv.shutdown()
    srv.server_close()


def _assertion(cid: str, key: RSAKey, aud: str = TOKEN_URL, jti: str | None = None) -> str:
    t = int(time.time())
    return jwt.encode({"alg": "RS384", "kid": key.kid}, {"iss": cid, "sub": cid, "aud": aud, "exp": t + 120,
                                                          "iat": t, "jti": jti or uuid.uuid4().hex},
                      key, algorithms=["RS384"])


def test_backend_client_with_a_jwks_url(sapp, engine, open_client, jwks_server):
    seed(open_client, standard_data())
    key = RSAKey.generate_key(2048, parameters={"kid": "url-1"}, private=True)
    jwks_server["jwks"] = {"keys": [key.as_dict(private=False)]}
    cl = store.add_client(engine, name="EHR", auth_method="private_key_jwt", jwks_uri=jwks_server["url"],
                          scope="system/*.rs", organization="org1")
    c = sapp.test_client()
    form = {"grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion_type": ASSERTION_TYPE}
    r = c.post("/auth/token", data={**form, "client_assertion": _assertion(cl["client_id"], key)})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert ids(c.get("/fhir/Patient", headers=bearer(r.get_json()["access_token"])).get_json()) == {"a", "b"}
    # a key that is not in the client's key set; the assertion of another client named as this one
    other = RSAKey.generate_key(2048, parameters={"kid": "url-1"}, private=True)
    r = c.post("/auth/token", data={**form, "client_assertion": _assertion(cl["client_id"], other)})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    # an assertion for the introspection endpoint is not one for the token endpoint
    r = c.post("/auth/token", data={**form, "client_assertion": _assertion(cl["client_id"], key,
                                                                            aud="http://testserver/auth/introspect")})
    assert r.status_code == 401
    # a wrong assertion type is no authentication at all
    r = c.post("/auth/token", data={**form, "client_assertion_type": "urn:x",
                                    "client_assertion": _assertion(cl["client_id"], key)})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"


def test_jti_replay_is_refused_by_every_app_on_the_database(sapp, engine, settings, open_client):
    """Two app instances (two workers) share the jti store: a replay to the second one fails."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    cl = store.add_client(engine, name="EHR", auth_method="private_key_jwt",
                          jwks={"keys": [key.as_dict(private=False)]}, scope="system/*.rs")
    form = {"grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(cl["client_id"], key)}
    assert sapp.test_client().post("/auth/token", data=form).status_code == 200
    with built_app(settings.replace(insecure_no_auth=False)) as other:
        r = other.test_client().post("/auth/token", data=form)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    assert "used before" in r.get_json()["error_description"]


# -- RFC 7662 and RFC 7009 -----------------------------------------------------------------------------
def test_revoking_another_clients_token_changes_nothing(sapp, engine, open_client):
    seed(open_client, standard_data())
    _ann(engine)
    c = sapp.test_client()
    cid = _client(engine)["client_id"]
    other = _client(engine)["client_id"]
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="launch/patient patient/*.rs offline_access", username="ann",
                               challenge=challenge))
    tok = _exchange(c, cid, code, verifier).get_json()
    r = c.post("/auth/revoke", data={"token": tok["access_token"], "client_id": other})
    assert r.status_code == 200 and r.get_json() == {}
    assert c.get("/fhir/Patient/a", headers=bearer(tok["access_token"])).status_code == 200
    # an unknown token_type_hint is refused; a wrong but known hint is only a hint
    r = c.post("/auth/revoke", data={"token": tok["access_token"], "client_id": cid, "token_type_hint": "x"})
    assert r.status_code == 400 and r.get_json()["error"] == "unsupported_token_type", r.get_data(as_text=True)
    r = c.post("/auth/introspect", data={"token": tok["refresh_token"], "client_id": cid,
                                         "token_type_hint": "access_token"})
    assert r.get_json()["active"] is True and r.get_json()["token_type"] == "refresh_token"
    # the owner revokes its access token: only that token ends, the refresh token still works
    assert c.post("/auth/revoke", data={"token": tok["access_token"], "client_id": cid}).status_code == 200
    assert c.get("/fhir/Patient/a", headers=bearer(tok["access_token"])).status_code == 401
    assert token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid).status_code == 200
    # introspection without any client authentication is refused
    r = c.post("/auth/introspect", data={"token": tok["refresh_token"]})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"


# -- RFC 7591 -------------------------------------------------------------------------------------------
def test_dynamic_registration_metadata(sapp, engine, open_client):
    seed(open_client, standard_data())
    c = sapp.test_client()
    it = store.add_initial_token(engine, organization="org2")
    h = {"Authorization": f"Bearer {it}"}
    r = c.post("/auth/register", json={"client_name": "Public", "redirect_uris": [REDIRECT],
                                        "token_endpoint_auth_method": "none", "scope": "patient/*.rs"}, headers=h)
    assert r.status_code == 201, r.get_data(as_text=True)
    pub = r.get_json()
    assert "client_secret" not in pub and pub["token_endpoint_auth_method"] == "none"
    assert pub["grant_types"] == ["authorization_code", "refresh_token"] and r.headers["Cache-Control"] == "no-store"
    r = c.post("/auth/register", json={"client_name": "Conf", "redirect_uris": [REDIRECT]}, headers=h)
    conf = r.get_json()
    assert r.status_code == 201 and conf["token_endpoint_auth_method"] == "client_secret_basic"
    assert conf["client_secret"] and store.get_client(engine, conf["client_id"])["auth_method"] == "client_secret_basic"
    # a backend client registered with the initial token is bound to its organization
    key = RSAKey.generate_key(2048, parameters={"kid": "reg"}, private=True)
    r = c.post("/auth/register", json={"client_name": "EHR", "token_endpoint_auth_method": "private_key_jwt",
                                        "grant_types": ["client_credentials"], "scope": "system/*.rs",
                                        "jwks": {"keys": [key.as_dict(private=False)]}}, headers=h)
    assert r.status_code == 201, r.get_data(as_text=True)
    ehr = r.get_json()
    assert ehr["organization"] == "org2" and "client_secret" not in ehr
    tok = c.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                      "client_assertion_type": ASSERTION_TYPE,
                                      "client_assertion": _assertion(ehr["client_id"], key)}).get_json()
    assert ids(c.get("/fhir/Patient", headers=bearer(tok["access_token"])).get_json()) == {"c"}
    # bad metadata: RFC 7591 3.2.2 errors
    bad = [({"client_name": "X", "redirect_uris": ["not a uri"]}, ("invalid_redirect_uri", "invalid_client_metadata")),
           ({"client_name": "X", "token_endpoint_auth_method": "tls_client_auth", "redirect_uris": [REDIRECT]},
            ("invalid_client_metadata",)),
           ({"client_name": "X", "grant_types": ["password"], "redirect_uris": [REDIRECT]}, ("invalid_client_metadata",)),
           ({"client_name": "X", "token_endpoint_auth_method": "private_key_jwt"}, ("invalid_client_metadata",)),
           ({"client_name": "X", "jwks": {"keys": [{"kty": "nope"}]}, "token_endpoint_auth_method": "private_key_jwt"},
            ("invalid_client_metadata",))]
    for meta, errors in bad:
        r = c.post("/auth/register", json=meta, headers=h)
        assert r.status_code == 400 and r.get_json()["error"] in errors, (meta, r.get_data(as_text=True))
    r = c.post("/auth/register", data="nope", headers={**h, "Content-Type": "text/plain"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_client_metadata"
    # a wrong initial access token registers nothing
    r = c.post("/auth/register", json={"client_name": "Y", "redirect_uris": [REDIRECT]},
               headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
    assert "WWW-Authenticate" in r.headers


def test_non_ascii_authorization_input_and_launch_without_bearer_are_refused_not_500(sapp, engine):  # noqa: ANN001
    """authlib will not build an error description quoting non-ASCII input; such requests get our
    error page, and `/auth/launch` without a Bearer token an RFC 6750 challenge."""
    c = sapp.test_client()
    cid = _client(engine)
    ok = _authorize_query(c, cid)  # the same client's well-formed request is served
    assert ok != 500
    for query in ({"response_type": "cøde", "client_id": cid},
                  {"response_type": "code", "client_id": cid, "redirect_uri": "https://ø.example/cb"}):
        r = c.get("/auth/authorize?" + urlencode(query))
        assert r.status_code == 400, (query, r.status_code)
    r = c.post("/auth/launch", json={"patient": "a"}, headers={"Authorization": "Basic eDp5"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
