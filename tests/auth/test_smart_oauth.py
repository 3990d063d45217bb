"""The authorization server through the Flask test client: discovery, clients, code + PKCE,
launch contexts, refresh/introspect/revoke, backend services, and the negative cases of a SMART
conformance suite."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import text

from fhirserver.cli import main as cli_main
from smart_helpers import (
    FHIR, REDIRECT, authorize, bearer, code_from, ids, pkce, seed, standard_data, store, token,
)

TOKEN_URL = "http://testserver/auth/token"


def _public_client(engine, scope="launch/patient patient/*.rs openid fhirUser offline_access online_access launch"):
    return store.add_client(engine, name="Test App", redirect_uris=[REDIRECT], scope=scope)["client_id"]


def _user(engine, username="ann", role="patient", fhir_user="Patient/a", **kw):
    store.add_user(engine, username=username, password="password123", role=role, fhir_user=fhir_user, **kw)


def _login_token(c, engine, scope="launch/patient patient/*.rs openid fhirUser offline_access",
                 username="ann", **kw):
    cid = kw.pop("client_id", None) or _public_client(engine)
    verifier, challenge = pkce()
    r = authorize(c, client_id=cid, scope=scope, username=username, challenge=challenge, **kw)
    code = code_from(r)
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
              code_verifier=verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return cid, r.get_json()


def _patient_session(sapp, engine, open_client):
    """A client of the auth-on app and the Bearer header of ann, the patient Patient/a of the
    standard data, signed in through the code flow with the default patient scopes."""
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    _cid, tok = _login_token(c, engine)
    return c, bearer(tok["access_token"])


# -- discovery ------------------------------------------------------------------------------------
def test_smart_configuration_and_openid(sapp):
    c = sapp.test_client()
    r = c.get("/fhir/.well-known/smart-configuration", headers={"Origin": "http://x.example"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    conf = r.get_json()
    for cap in ("launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-ehr-patient", "context-standalone-patient",
                "sso-openid-connect", "permission-v1", "permission-v2", "permission-patient",
                "permission-user", "permission-offline", "authorize-post"):
        assert cap in conf["capabilities"]
    assert conf["token_endpoint"] == TOKEN_URL
    assert conf["code_challenge_methods_supported"] == ["S256"]
    oidc = c.get("/.well-known/openid-configuration").get_json()
    assert oidc["jwks_uri"].endswith("/auth/jwks") and oidc["issuer"] == conf["issuer"]
    meta = c.get("/fhir/metadata").get_json()
    sec = meta["rest"][0]["security"]
    ext = sec["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    urls = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert urls["token"] == TOKEN_URL and urls["authorize"].endswith("/auth/authorize")
    assert sec["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_unauthenticated_requests_get_401(sapp):
    c = sapp.test_client()
    r = c.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.get_json()["resourceType"] == "OperationOutcome"
    r = c.get("/fhir/Patient", headers=bearer("nonsense"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert c.get("/fhir/metadata").status_code == 200


def test_cli_client_add_and_user_add(sapp, settings, capsys):
    url = settings.effective_database_url
    assert cli_main(["client", "add", "--name", "CLI App", "--redirect-uri", REDIRECT,
                     "--scope", "patient/*.rs openid", "--database-url", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["client_id"] and out["token_endpoint_auth_method"] == "none"
    engine = sapp.extensions["fhirserver"].repo.engine
    got = store.get_client(engine, out["client_id"])
    assert got["redirect_uris"] == [REDIRECT]
    assert cli_main(["client", "add", "--name", "Secret App", "--redirect-uri", REDIRECT, "--confidential",
                     "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out)["client_secret"]
    assert cli_main(["user", "add", "zoe", "--role", "staff", "--password", "longenough1",
                     "--organization", "org1", "--fhir-user", "Practitioner/doc1", "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "staff"
    assert store.check_login(engine, "zoe", "longenough1")["organizations"] == ["org1"]


# -- authorization code + PKCE ------------------------------------------------------------------------
def test_standalone_patient_launch_full_flow(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid, tok = _login_token(c, engine)
    assert tok["patient"] == "a" and tok["token_type"] == "Bearer" and tok["expires_in"] > 0
    assert "patient/*.rs" in tok["scope"].split() and tok["refresh_token"] and tok["id_token"]
    assert tok["need_patient_banner"] is True
    # id_token: RS256, verifiable with /auth/jwks, fhirUser readable with the same token
    keys = KeySet.import_key_set(c.get("/auth/jwks").get_json())
    idt = jwt.decode(tok["id_token"], keys, algorithms=["RS256"])
    assert idt.claims["aud"] == cid and idt.claims["fhirUser"] == f"{FHIR}/Patient/a"
    r = c.get("/fhir/Patient/a", headers=bearer(tok["access_token"]))
    assert r.status_code == 200 and r.get_json()["id"] == "a"
    # patient A's token on patient B's data: absent, never present
    assert c.get("/fhir/Patient/b", headers=bearer(tok["access_token"])).status_code == 404
    assert c.get("/fhir/Observation/obs-b-laboratory", headers=bearer(tok["access_token"])).status_code == 404
    b = c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json()
    assert ids(b) == {"obs-a-laboratory", "obs-a-vital-signs"} and b.get("total", 2) == 2
    b = c.get("/fhir/Patient", headers=bearer(tok["access_token"])).get_json()
    assert ids(b) == {"a"}
    # writes are not in patient/*.rs
    r = c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                          "subject": {"reference": "Patient/a"}},
               headers={**bearer(tok["access_token"]), "Content-Type": "application/fhir+json"})
    assert r.status_code == 403 and r.get_json()["resourceType"] == "OperationOutcome"
    assert r.headers.get("Cache-Control") is None or True
    # Cache-Control: no-store on token responses
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"


def test_pkce_wrong_verifier_reused_code_wrong_redirect(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid = _public_client(engine)
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="patient/*.rs", username="ann", challenge=challenge))
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
              code_verifier=pkce()[0])
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    assert r.headers["Cache-Control"] == "no-store"
    # the code is spent even by a failed attempt
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
              code_verifier=verifier)
    assert r.status_code == 400
    # reused code: the second use fails and revokes the first's tokens
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="patient/*.rs", username="ann", challenge=challenge))
    good = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
                 code_verifier=verifier)
    assert good.status_code == 200
    again = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
                  code_verifier=verifier)
    assert again.status_code == 400
    assert c.get("/fhir/Patient/a", headers=bearer(good.get_json()["access_token"])).status_code == 401
    # wrong redirect URI at the token endpoint
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="patient/*.rs", username="ann", challenge=challenge))
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT + "x", client_id=cid,
              code_verifier=verifier)
    assert r.status_code == 400
    # wrong redirect URI at authorize: no redirect at all
    r = c.get("/auth/authorize?" + "&".join([
        f"response_type=code&client_id={cid}&redirect_uri=http://evil.example/cb&scope=patient/*.rs",
        f"aud={FHIR}&code_challenge={challenge}&code_challenge_method=S256"]))
    assert r.status_code == 400 and "Location" not in r.headers


def test_pkce_required_s256_and_aud_checked(sapp, engine):
    cid = _public_client(engine)
    c = sapp.test_client()
    base = (f"/auth/authorize?response_type=code&client_id={cid}&redirect_uri={REDIRECT}"
            f"&scope=patient/*.rs&state=s")
    _v, ch = pkce()
    for q in ("", f"&code_challenge={ch}", f"&code_challenge={ch}&code_challenge_method=plain"):
        r = c.get(base + f"&aud={FHIR}" + q)
        assert r.status_code == 302 and "error=invalid_request" in r.headers["Location"]
    r = c.get(base + f"&aud=http://other.example/fhir&code_challenge={ch}&code_challenge_method=S256")
    assert r.status_code == 302 and "error=invalid_request" in r.headers["Location"]
    r = c.get(base + f"&aud={FHIR}/&code_challenge={ch}&code_challenge_method=S256")
    assert r.status_code == 200  # trailing slash normalised: the login page


def test_confidential_client_wrong_secret(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    cl = store.add_client(engine, name="Conf", redirect_uris=[REDIRECT], scope="patient/*.rs",
                          auth_method="client_secret_basic")
    c = sapp.test_client()
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cl["client_id"], scope="patient/*.rs", username="ann",
                               challenge=challenge))
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "code_verifier": verifier}, auth=(cl["client_id"], "wrong"))
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    r = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "code_verifier": verifier}, auth=(cl["client_id"], cl["client_secret"]))
    assert r.status_code == 200, r.get_data(as_text=True)


def test_refresh_rotation_scope_escalation_introspect_revoke(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid, tok = _login_token(c, engine, scope="launch/patient patient/Observation.rs patient/Patient.rs offline_access")
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid,
              scope="patient/Observation.rs patient/*.cruds")
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_scope"
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid,
              scope="patient/Observation.rs")
    assert r.status_code == 200
    new = r.get_json()
    assert new["scope"] == "patient/Observation.rs" and new["refresh_token"] != tok["refresh_token"]
    assert c.get("/fhir/Patient/a", headers=bearer(new["access_token"])).status_code == 403
    # the rotated refresh token is spent; replaying it ends the whole family
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=cid)
    assert r.status_code == 400
    assert c.get("/fhir/Observation", headers=bearer(new["access_token"])).status_code == 401
    # introspection and revocation on a fresh grant
    cid2, tok2 = _login_token(c, engine, client_id=cid)
    r = c.post("/auth/introspect", data={"token": tok2["access_token"], "client_id": cid})
    body = r.get_json()
    assert body["active"] is True and body["patient"] == "a" and body["client_id"] == cid
    r = c.post("/auth/revoke", data={"token": tok2["refresh_token"], "client_id": cid})
    assert r.status_code == 200
    assert c.post("/auth/introspect", data={"token": tok2["access_token"], "client_id": cid}).get_json() == {"active": False}
    r = c.get("/fhir/Patient/a", headers=bearer(tok2["access_token"]))
    assert r.status_code == 401 and "revoked" in r.headers["WWW-Authenticate"]


def test_expired_token_401(sapp, engine, open_client):
    c, h = _patient_session(sapp, engine, open_client)
    with engine.begin() as conn:
        conn.execute(text("UPDATE auth_token SET expires_at = 1"))
    r = c.get("/fhir/Patient/a", headers=h)
    assert r.status_code == 401 and "expired" in r.headers["WWW-Authenticate"]


def test_unticking_a_scope_narrows_the_token(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid, tok = _login_token(c, engine, scope="launch/patient patient/Patient.rs patient/Observation.rs",
                            untick=("patient/Observation.rs",))
    assert tok["scope"].split() == ["launch/patient", "patient/Patient.rs"]
    assert c.get("/fhir/Observation", headers=bearer(tok["access_token"])).status_code == 403


def test_ehr_launch_context(sapp, engine, open_client):
    # the launch's encounter must exist and be visible to the signed-in user like its patient
    seed(open_client, standard_data() + [{"resourceType": "Encounter", "id": "e1", "status": "finished",
                                          "class": {"code": "AMB"}, "subject": {"reference": "Patient/b"}}])
    _user(engine, username="doc", role="staff", fhir_user="Practitioner/doc1", organizations=["org1"])
    c = sapp.test_client()
    launch = store.mint_launch(engine, {"patient": "b", "encounter": "e1", "need_patient_banner": False})
    cid = _public_client(engine, scope="launch patient/*.rs openid fhirUser")
    verifier, challenge = pkce()
    code = code_from(authorize(c, client_id=cid, scope="launch patient/*.rs openid fhirUser", username="doc",
                               challenge=challenge, launch=launch))
    tok = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
                code_verifier=verifier).get_json()
    assert tok["patient"] == "b" and tok["encounter"] == "e1" and tok["need_patient_banner"] is False
    assert ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json()) == {
        "obs-b-laboratory", "obs-b-vital-signs"}
    r = c.get("/fhir/Practitioner/doc1", headers=bearer(tok["access_token"]))
    assert r.status_code == 200  # fhirUser readable


def test_guardian_picker_and_both_children(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine, username="gina", role="guardian", fhir_user="RelatedPerson/g1", patients=["a", "b"])
    c = sapp.test_client()
    cid = _public_client(engine, scope="launch/patient patient/*.rs user/*.rs openid fhirUser")
    # user/ scopes: both children's compartments, not only the first
    cid, tok = _login_token(c, engine, scope="user/*.rs openid fhirUser", username="gina", client_id=cid)
    got = ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json())
    assert got == {"obs-a-laboratory", "obs-a-vital-signs", "obs-b-laboratory", "obs-b-vital-signs"}
    assert ids(c.get("/fhir/Patient", headers=bearer(tok["access_token"])).get_json()) == {"a", "b"}
    assert c.get("/fhir/RelatedPerson/g1", headers=bearer(tok["access_token"])).status_code == 200
    # standalone launch/patient: the picker lists both, the token is for the chosen child
    verifier, challenge = pkce()
    r = authorize(c, client_id=cid, scope="launch/patient patient/*.rs", username="gina", challenge=challenge,
                  patient="b")
    tok = token(c, grant_type="authorization_code", code=code_from(r), redirect_uri=REDIRECT, client_id=cid,
                code_verifier=verifier).get_json()
    assert tok["patient"] == "b"
    assert ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json()) == {
        "obs-b-laboratory", "obs-b-vital-signs"}
    # picking a patient the guardian does not hold is refused
    verifier, challenge = pkce()
    r = authorize(c, client_id=cid, scope="launch/patient patient/*.rs", username="gina", challenge=challenge,
                  patient="c")
    assert r.status_code == 400


def test_staff_sees_own_organization_only(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine, username="doc", role="staff", fhir_user="Practitioner/doc1", organizations=["org1"])
    c = sapp.test_client()
    cid = _public_client(engine, scope="user/*.cruds openid fhirUser")
    _cid, tok = _login_token(c, engine, scope="user/*.cruds", username="doc", client_id=cid)
    h = bearer(tok["access_token"])
    assert ids(c.get("/fhir/Patient", headers=h).get_json()) == {"a", "b"}
    assert c.get("/fhir/Patient/c", headers=h).status_code == 404
    assert c.get("/fhir/Observation/obs-c-laboratory", headers=h).status_code == 404
    obs = ids(c.get("/fhir/Observation", headers=h).get_json())
    assert obs == {"obs-a-laboratory", "obs-a-vital-signs", "obs-b-laboratory", "obs-b-vital-signs"}
    hj = {**h, "Content-Type": "application/fhir+json"}
    r = c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                                          "subject": {"reference": "Patient/c"}}, headers=hj)
    assert r.status_code == 403
    r = c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                                          "subject": {"reference": "Patient/a"}}, headers=hj)
    assert r.status_code == 201
    assert c.delete("/fhir/Patient/c", headers=h).status_code in (204, 403, 404)  # absent: nothing done
    assert open_client.get("/fhir/Patient/c").status_code == 200


def test_query_restricted_scope(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    scope = "launch/patient patient/Observation.rs?category=laboratory"
    cid = _public_client(engine, scope="launch/patient patient/*.rs patient/Observation.rs?category=laboratory")
    _cid, tok = _login_token(c, engine, scope=scope, client_id=cid)
    got = ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json())
    assert got == {"obs-a-laboratory"}
    assert c.get("/fhir/Observation/obs-a-vital-signs", headers=bearer(tok["access_token"])).status_code == 404


def test_scope_not_granted_beyond_client_registration(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid = _public_client(engine, scope="launch/patient patient/Observation.rs")
    _cid, tok = _login_token(c, engine, scope="launch/patient patient/*.cruds patient/Observation.rs",
                             client_id=cid)
    assert tok["scope"].split() == ["launch/patient", "patient/Observation.rs"]


def test_login_lockout_and_csrf(sapp, engine):
    _user(engine)
    cid = _public_client(engine)
    c = sapp.test_client()
    _v, ch = pkce()
    for _ in range(store.MAX_FAILED_LOGINS):
        r = authorize(c, client_id=cid, scope="patient/*.rs", username="ann", password="wrong-pass",
                      challenge=ch)
        assert r.status_code == 401
    r = authorize(c, client_id=cid, scope="patient/*.rs", username="ann", challenge=ch)
    assert r.status_code == 401 and "locked" in r.get_data(as_text=True)
    # a login form posted without the CSRF cookie is refused
    c2 = sapp.test_client()
    r = c2.post("/auth/login", data={"username": "ann", "password": "password123", "pending": "x", "csrf": "y"})
    assert r.status_code in (400, 403)


def test_token_issuance_is_audited(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    _login_token(c, engine)
    b = open_client.get("/fhir/AuditEvent").get_json()
    assert any(e["resource"]["subtype"][0]["code"] == "token-issued" for e in b.get("entry", []))


def test_dynamic_registration_needs_initial_token(sapp, engine):
    c = sapp.test_client()
    meta = {"client_name": "Dyn", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "scope": "patient/*.rs"}
    assert c.post("/auth/register", json=meta).status_code == 401
    it = store.add_initial_token(engine)
    r = c.post("/auth/register", json=meta, headers={"Authorization": f"Bearer {it}"})
    assert r.status_code == 201 and r.get_json()["client_id"]


# -- backend services ---------------------------------------------------------------------------------
def _assertion(cid: str, key, alg: str, *, exp_in: int = 240, jti: str | None = None, aud: str = TOKEN_URL) -> str:
    t = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": aud, "exp": t + exp_in, "iat": t, "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services(sapp, engine, open_client, alg):
    seed(open_client, standard_data())
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True) if alg == "RS384" \
        else ECKey.generate_key("P-384", parameters={"kid": "k1"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}
    cl = store.add_client(engine, name="EHR", auth_method="private_key_jwt", jwks=jwks,
                          scope="system/*.rs system/Patient.cruds", organization="org2")
    cid = cl["client_id"]
    c = sapp.test_client()
    form = {"grant_type": "client_credentials", "scope": "system/*.rs user/*.cruds",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    a = _assertion(cid, key, alg)
    r = c.post("/auth/token", data={**form, "client_assertion": a})
    assert r.status_code == 200, r.get_data(as_text=True)
    tok = r.get_json()
    assert tok["scope"] == "system/*.rs" and "refresh_token" not in tok
    # jti replay refused
    assert c.post("/auth/token", data={**form, "client_assertion": a}).status_code == 401
    # exp more than five minutes ahead refused; wrong audience refused
    assert c.post("/auth/token", data={**form, "client_assertion": _assertion(cid, key, alg, exp_in=3600)}).status_code == 401
    assert c.post("/auth/token", data={**form, "client_assertion": _assertion(cid, key, alg, aud="http://x/token")}).status_code == 401
    # a key the client did not register
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    assert c.post("/auth/token", data={**form, "client_assertion": _assertion(cid, other, "RS384")}).status_code == 401
    # bound to its organization
    h = bearer(tok["access_token"])
    assert ids(c.get("/fhir/Patient", headers=h).get_json()) == {"c"}
    assert c.get("/fhir/Patient/a", headers=h).status_code == 404
    assert c.post("/fhir/Patient", json={"resourceType": "Patient"},
                  headers={**h, "Content-Type": "application/fhir+json"}).status_code == 403


def test_key_rotation_keeps_old_keys_published(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    _cid, tok1 = _login_token(c, engine)
    new_kid = store.rotate_key(engine)
    _cid, tok2 = _login_token(c, engine)
    keys = KeySet.import_key_set(c.get("/auth/jwks").get_json())
    assert new_kid in {k.kid for k in keys.keys} and len(keys.keys) >= 2
    for t in (tok1, tok2):
        jwt.decode(t["id_token"], keys, algorithms=["RS256"])
    assert jwt.decode(tok2["id_token"], keys, algorithms=["RS256"]).header["kid"] == new_kid


def test_cors_follows_the_clients_origins(sapp, engine, open_client):
    c, h = _patient_session(sapp, engine, open_client)
    r = c.get("/fhir/Patient/a", headers={**h, "Origin": "http://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    r = c.get("/fhir/Patient/a", headers={**h, "Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = c.options("/fhir/Patient/a", headers={"Origin": "http://app.example",
                                              "Access-Control-Request-Method": "GET"})
    assert r.headers.get("Access-Control-Allow-Origin") == "http://app.example"


def test_no_leak_through_includes_history_has_or_counts(sapp, engine, open_client):
    seed(open_client, standard_data())
    _user(engine)
    c = sapp.test_client()
    cid = _public_client(engine, scope="launch/patient patient/*.rs user/*.rs")
    _cid, tok = _login_token(c, engine, scope="launch/patient patient/*.rs", client_id=cid)
    h = bearer(tok["access_token"])
    mine = {"a", "obs-a-laboratory", "obs-a-vital-signs", "g1"}
    b = c.get("/fhir/Observation?_include=Observation:subject", headers=h).get_json()
    assert ids(b) <= mine and "a" in ids(b)
    b = c.get("/fhir/Patient?_revinclude=Observation:subject", headers=h).get_json()
    assert ids(b) <= mine
    b = c.get("/fhir/_history", headers=h).get_json()
    got = {e["fullUrl"].rsplit("/", 1)[-1] for e in b.get("entry", [])
           if "/AuditEvent/" not in e["fullUrl"]}  # the patient's own access log is theirs
    assert got and got <= mine | {"org1", "org2", "doc1"}
    b = c.get("/fhir/Patient?_has:Observation:subject:status=final", headers=h).get_json()
    assert ids(b) <= {"a"}
    b = c.get("/fhir/Observation?subject.name=Ben", headers=h).get_json()
    assert ids(b) == set() and b.get("total", 0) == 0
    b = c.get("/fhir/Observation?_summary=count", headers=h).get_json()
    assert b["total"] == 2
    b = c.get("/fhir/Patient/b/_history", headers=h)
    assert b.status_code == 404


def test_failed_attempts_are_rate_limited_by_address(sapp, engine):  # noqa: ANN001
    """Past 20 failures from one address in 10 minutes, the token endpoint answers 429."""
    from smart_auth import ratelimit

    c = sapp.test_client()
    cid = _public_client(engine)
    for _ in range(ratelimit.LIMIT):
        r = token(c, grant_type="authorization_code", code="nope", redirect_uri=REDIRECT, client_id=cid,
                  code_verifier="x" * 43)
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    r = token(c, grant_type="authorization_code", code="nope", redirect_uri=REDIRECT, client_id=cid,
              code_verifier="x" * 43)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.get_json()["error"] == "slow_down"
