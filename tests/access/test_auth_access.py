"""The authorization server as an attacker meets it: launch contexts bound to the user, guardian
links whose removal ends tokens at once, links that ignore the Host header, banners that ignore the
query string. Each refusal first shows the same request working for the caller's own data."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import insert

from smart_auth import store
from tests.auth.smart_helpers import REDIRECT, authorize, bearer, ids, pkce, seed, token
from tests.conftest import app_fixture, emptied, run_smtp_server

FHIR_JSON = "application/fhir+json"
AUTH_TABLES = ("auth_token", "auth_code", "auth_session", "auth_launch", "auth_jti", "auth_user", "oauth_client",
               "lifecycle_invitation", "lifecycle_account", "lifecycle_email", "lifecycle_access_request",
               "notify_outbox", "portal_slot_booking", "portal_share_revocation")


@pytest.fixture(scope="module")
def aa_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="module")
def aa_session_app(settings, session_app, aa_smtp, open_apps):  # noqa: ANN001, ANN201
    """Auth on, the configured base URL http://testserver, mail to a real SMTP server."""
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=aa_smtp.url), open_apps)


@pytest.fixture(scope="module")
def nobase_session_app(settings, session_app, aa_smtp, open_apps):  # noqa: ANN001, ANN201
    """Auth on, no --base-url: started on 127.0.0.1:8123 (links must say so, whatever the Host)."""
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=aa_smtp.url, base_url="",
                                            host="127.0.0.1", port=8123), open_apps)


@pytest.fixture()
def aa(aa_session_app, app, aa_smtp):  # noqa: ANN001, ANN201
    return emptied(aa_session_app, AUTH_TABLES, aa_smtp)


@pytest.fixture()
def open_client(app):  # noqa: ANN001, ANN201
    """No-auth client on the same database, to seed data."""
    return app.test_client()


@pytest.fixture()
def engine(aa):  # noqa: ANN001, ANN201
    return aa.extensions["fhirserver"].repo.engine


def _data() -> list[dict]:
    """Organizations 1 and 2; patients a, c (org 1) and b (org 2), each with an Observation and an
    Encounter; guardian g1 of a."""
    out: list[dict] = [{"resourceType": "Organization", "id": "org1", "name": "One"},
                       {"resourceType": "Organization", "id": "org2", "name": "Two"}]
    for pid, org in (("a", "org1"), ("b", "org2"), ("c", "org1")):
        out.append({"resourceType": "Patient", "id": pid, "name": [{"family": pid.upper(), "given": ["P"]}],
                    "managingOrganization": {"reference": f"Organization/{org}"}})
        out.append({"resourceType": "Observation", "id": f"obs-{pid}", "status": "final", "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{pid}"}})
        out.append({"resourceType": "Encounter", "id": f"enc-{pid}", "status": "finished", "class": {"code": "AMB"},
                    "subject": {"reference": f"Patient/{pid}"}})
    out.append({"resourceType": "RelatedPerson", "id": "g1", "patient": {"reference": "Patient/a"},
                "telecom": [{"system": "email", "value": "gina@example.org"}]})
    return out


def _client(engine, scope: str) -> str:  # noqa: ANN001
    return store.add_client(engine, name="App", redirect_uris=[REDIRECT], scope=scope)["client_id"]


def _staff(engine, name: str, org: str) -> None:  # noqa: ANN001
    store.add_user(engine, username=name, password="password123", role="staff", organizations=[org],
                   fhir_user=f"Practitioner/{name}")


def _code_or_error(resp) -> tuple[str | None, dict]:  # noqa: ANN001
    """(code, query) of the final redirect back to the app."""
    assert resp.status_code == 302, resp.get_data(as_text=True)[:400]
    q = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
    return q.get("code"), q


def _grant(c, cid: str, scope: str, username: str, **kw) -> dict:  # noqa: ANN001
    verifier, challenge = pkce()
    code, q = _code_or_error(authorize(c, client_id=cid, scope=scope, username=username, challenge=challenge, **kw))
    assert code, q
    r = token(c, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=cid,
              code_verifier=verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def _mint(c, tok: str, **ctx) -> str:  # noqa: ANN001
    r = c.post("/auth/launch", json=ctx, headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["launch"]


# -- 1. launch contexts -------------------------------------------------------------------------
def test_ehr_launch_is_bound_to_what_the_user_may_see(aa, engine, open_client):
    seed(open_client, _data())
    _staff(engine, "doc1", "org1")
    _staff(engine, "doc2", "org2")
    c, c2 = aa.test_client(), aa.test_client()  # doc1's and doc2's browsers
    ehr = _client(engine, "user/*.rs")
    app_scope = "launch patient/*.rs openid fhirUser"
    app = _client(engine, app_scope)
    doc1 = _grant(c, ehr, "user/*.rs", "doc1")["access_token"]
    doc2 = _grant(c2, ehr, "user/*.rs", "doc2")["access_token"]

    # doc1's own launch for org 1's patient a works
    tok = _grant(c, app, app_scope, "doc1", launch=_mint(c, doc1, patient="a", encounter="enc-a"))
    assert tok["patient"] == "a" and tok["encounter"] == "enc-a"
    assert ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json()) == {"obs-a"}

    # a launch minted by org 2 for its patient b: org 2's own user gets it...
    system = store.add_client(engine, name="EHR 2", auth_method="client_secret_basic", scope="system/*.rs",
                              grant_types=["client_credentials"], organization="org2")
    r = c.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
               auth=(system["client_id"], system["client_secret"]))
    org2_launch = _mint(c, r.get_json()["access_token"], patient="b")
    assert _grant(c2, app, app_scope, "doc2", launch=org2_launch)["patient"] == "b"
    # ...staff of org 1 signing in with it get no code and no token for b
    c1 = aa.test_client()
    _verifier, challenge = pkce()
    code, q = _code_or_error(authorize(c1, client_id=app, scope=app_scope, username="doc1", challenge=challenge,
                                       launch=org2_launch))
    assert code is None and q["error"] == "access_denied"

    # a launch doc2 minted for b is bound to doc2
    bound = _mint(c, doc2, patient="b")
    code, q = _code_or_error(authorize(aa.test_client(), client_id=app, scope=app_scope, username="doc1",
                                       challenge=challenge, launch=bound))
    assert code is None and q["error"] == "access_denied"
    # a visible patient with another organization's encounter is refused too
    crafted = store.mint_launch(engine, {"patient": "a", "encounter": "enc-b"})
    code, q = _code_or_error(authorize(aa.test_client(), client_id=app, scope=app_scope, username="doc1",
                                       challenge=challenge, launch=crafted))
    assert code is None and q["error"] == "access_denied"
    # minting is checked against the minter: doc1 cannot mint a launch for b
    r = c.post("/auth/launch", json={"patient": "b"}, headers={"Authorization": f"Bearer {doc1}"})
    assert r.status_code == 400


def test_standalone_picker_lists_only_visible_patients(aa, engine, open_client):
    seed(open_client, _data())
    _staff(engine, "doc1", "org1")
    scope = "launch/patient patient/*.rs"
    app = _client(engine, scope)
    c = aa.test_client()
    tok = _grant(c, app, scope, "doc1", patient="c")
    assert tok["patient"] == "c"
    assert ids(c.get("/fhir/Observation", headers=bearer(tok["access_token"])).get_json()) == {"obs-c"}
    _verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": app, "redirect_uri": REDIRECT, "scope": scope, "state": "s",
              "aud": "http://testserver/fhir", "code_challenge": challenge, "code_challenge_method": "S256"}
    page = c.get("/auth/authorize?" + urlencode(params)).get_data(as_text=True)  # signed in already
    radios = set(re.findall(r'name="patient" value="([^"]*)"', page))
    assert radios == {"a", "c"}
    r = authorize(c, client_id=app, scope=scope, username="doc1", challenge=challenge, patient="b")
    assert r.status_code == 400 and "code=" not in r.headers.get("Location", "")


# -- 2. removing a link ends grants at once ------------------------------------------------------------
def _guardian_tokens(aa, engine, fhir_user: str | None = "RelatedPerson/g1"):  # noqa: ANN001, ANN201
    store.add_user(engine, username="gina@example.org", password="password123", role="guardian",
                   fhir_user=fhir_user, patients=["a"])
    scope = "launch/patient patient/*.rs offline_access"
    app = _client(engine, scope)
    c = aa.test_client()
    tok = _grant(c, app, scope, "gina@example.org")
    assert tok["patient"] == "a"
    h = bearer(tok["access_token"])
    assert ids(c.get("/fhir/Observation", headers=h).get_json()) == {"obs-a"}
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=app)
    assert r.status_code == 200, r.get_data(as_text=True)  # refresh works while the link holds
    fresh = r.get_json()
    assert ids(c.get("/fhir/Observation", headers=bearer(fresh["access_token"])).get_json()) == {"obs-a"}
    return c, app, fresh


def _staff_headers(aa, engine) -> dict:  # noqa: ANN001
    _staff(engine, "doc1", "org1")
    ehr = _client(engine, "user/*.cruds")
    tok = _grant(aa.test_client(), ehr, "user/*.cruds", "doc1")["access_token"]
    return {**bearer(tok), "Content-Type": FHIR_JSON}


def _remove_link(c, h: dict, how: str) -> None:  # noqa: ANN001
    g1 = {"resourceType": "RelatedPerson", "id": "g1", "patient": {"reference": "Patient/a"},
          "telecom": [{"system": "email", "value": "gina@example.org"}]}
    if how in ("delete", "delete-email-link"):
        r = c.delete("/fhir/RelatedPerson/g1", headers=h)
    elif how == "repoint":  # the same RelatedPerson now names another patient: no access to either
        r = c.put("/fhir/RelatedPerson/g1", json={**g1, "patient": {"reference": "Patient/c"}}, headers=h)
    elif how == "inactive":
        r = c.put("/fhir/RelatedPerson/g1", json={**g1, "active": False}, headers=h)
    else:  # a transaction Bundle entry
        r = c.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "RelatedPerson/g1"}}]}, headers=h)
    assert r.status_code in (200, 204), r.get_data(as_text=True)


@pytest.mark.parametrize("how", ["delete", "repoint", "inactive", "bundle", "delete-email-link"])
def test_removing_guardian_link_ends_tokens_at_once(aa, engine, open_client, how):
    seed(open_client, _data())
    # "delete-email-link": the login is tied to g1 only by the email g1 carries
    c, app, tok = _guardian_tokens(aa, engine, None if how == "delete-email-link" else "RelatedPerson/g1")
    h = bearer(tok["access_token"])
    _remove_link(c, _staff_headers(aa, engine), how)
    r = c.get("/fhir/Observation", headers=h)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert c.get("/fhir/Observation?patient=c", headers=h).status_code == 401
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=app)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    r = c.post("/auth/introspect", data={"token": tok["access_token"]}, headers=h)
    assert r.status_code == 401 or r.get_json()["active"] is False
    # a new authorization finds no child to act for
    scope = "launch/patient patient/*.rs"
    _verifier, challenge = pkce()
    code, q = _code_or_error(authorize(aa.test_client(), client_id=_client(engine, scope), scope=scope,
                                       username="gina@example.org", challenge=challenge))
    assert code is None and q["error"] == "access_denied"


def test_closing_the_account_ends_tokens_at_once(aa, engine, open_client):
    seed(open_client, _data())
    store.add_user(engine, username="ann@example.org", password="password123", role="patient",
                   fhir_user="Patient/a")
    scope = "launch/patient patient/*.cruds offline_access"
    app = _client(engine, scope)
    c = aa.test_client()
    tok = _grant(c, app, scope, "ann@example.org")
    h = bearer(tok["access_token"])
    assert ids(c.get("/fhir/Observation", headers=h).get_json()) == {"obs-a"}
    r = c.post("/fhir/Patient/a/$close", headers={**h, "Content-Type": FHIR_JSON})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert c.get("/fhir/Observation", headers=h).status_code == 401
    r = token(c, grant_type="refresh_token", refresh_token=tok["refresh_token"], client_id=app)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"


def _portal_login(app, username: str, password: str):  # noqa: ANN001, ANN201
    c = app.test_client()
    page = c.get("/portal/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/portal/login", data={"csrf": csrf, "username": username, "password": password})
    assert r.status_code == 303, r.get_data(as_text=True)[:400]
    return c


def test_portal_guardian_loses_a_child_when_its_link_goes(aa, open_client):
    """The demo mother is linked to her second child only by the RelatedPerson carrying her email."""
    from portal.demo import DEMO_PASSWORD, seed as demo_seed

    demo_seed(aa)
    c = _portal_login(aa, "carmen@example.org", DEMO_PASSWORD)
    page = c.get("/portal/reports").get_data(as_text=True)
    assert "Mia" in page and "Leo" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    c.post("/portal/switch", data={"csrf": csrf, "patient": "demo-mia"})
    assert c.get("/portal/reports/demo-mia-rep.pdf").status_code == 200
    assert open_client.delete("/fhir/RelatedPerson/demo-parent-mia").status_code in (200, 204)
    page = c.get("/portal/reports").get_data(as_text=True)
    assert "Mia" not in page and "Leo" in page
    assert c.get("/portal/reports/demo-mia-rep.pdf").status_code in (403, 404)


# -- 3. the base URL never comes from the Host header ---------------------------------------------------
def _reset_mail(app, smtp, host: str) -> str:  # noqa: ANN001
    """Ask the portal for a password reset with a forged Host header; the link it mails."""
    from fhirserver.access.tables import lifecycle_account

    eng = app.extensions["fhirserver"].repo.engine
    u = store.add_user(eng, username="ann@example.org", password="password123", role="patient",
                       fhir_user="Patient/a")
    with eng.begin() as conn:
        conn.execute(insert(lifecycle_account).values(
            user_pk=u["id"], res_type="Patient", res_id="a", email="ann@example.org", must_change_password=False,
            activated=store.now(), status="active", security_question="Pet?",
            security_answer_hash=store.hash_password("rex")))
    c = app.test_client()
    hdr = {"Host": host}
    page = c.get("/portal/forgot", headers=hdr).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/portal/forgot", data={"csrf": csrf, "email": "ann@example.org"}, headers=hdr)
    assert r.status_code == 200
    body = smtp.to("ann@example.org")[-1]["body"]
    return re.search(r"(https?://\S+/portal/reset\?token=\S+)", body).group(1)


def test_reset_mail_links_to_the_configured_base(aa, aa_smtp, open_client):
    seed(open_client, _data())
    link = _reset_mail(aa, aa_smtp, "evil.example")
    assert link.startswith("http://testserver/portal/reset?token=")
    # the link works, and the banner after it is the server's own message
    c = aa.test_client()
    path = link[len("http://testserver"):]
    page = c.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/portal/reset", data={"csrf": csrf, "token": parse_qs(urlsplit(link).query)["token"][0],
                                      "answer": "Rex", "new_password": "a-new-password"})
    assert r.status_code == 303 and "m=" not in r.headers["Location"]
    assert "Your password was reset" in c.get(r.headers["Location"]).get_data(as_text=True)


def test_links_use_the_listen_address_without_base_url(nobase_session_app, app, aa_smtp, open_client):
    seed(open_client, _data())
    nb = nobase_session_app
    emptied(nb, AUTH_TABLES)
    with aa_smtp.lock:
        aa_smtp.messages.clear()
    root = "http://127.0.0.1:8123"
    assert _reset_mail(nb, aa_smtp, "evil.example").startswith(root + "/portal/reset?token=")
    c = nb.test_client()
    evil = {"Host": "evil.example:8123"}
    conf = c.get("/fhir/.well-known/smart-configuration", headers=evil).get_json()
    assert conf["issuer"] == root and conf["jwks_uri"] == root + "/auth/jwks"
    assert conf["token_endpoint"] == root + "/auth/token"
    oidc = c.get("/.well-known/openid-configuration", headers=evil).get_json()
    assert oidc["issuer"] == root and oidc["jwks_uri"] == root + "/auth/jwks"
    # Location headers and Bundle links of the API
    eng = nb.extensions["fhirserver"].repo.engine
    tok, _ = store.save_token(eng, kind="access", grant_id="g", client_id="x", user_pk=None,
                              scope="user/*.cruds", context={"role": "admin"}, lifetime=600)
    h = {**bearer(tok), **evil, "Content-Type": FHIR_JSON}
    r = c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                                          "subject": {"reference": "Patient/a"}}, headers=h)
    assert r.status_code == 201 and r.headers["Location"].startswith(root + "/fhir/Observation/")
    bundle = c.get("/fhir/Observation?_count=1", headers=h).get_json()
    assert bundle["link"] and all(link["url"].startswith(root + "/fhir") for link in bundle["link"])
    from dicom.web.common import base_url

    with nb.test_request_context("/dicomweb/studies", headers=evil):
        assert base_url() == root + "/dicomweb"


# -- 4. banners come from the server, never from the query string ---------------------------------------
@pytest.mark.parametrize("text_", ["<script>alert(1)</script>", "Your account is suspended: call +1 555 0100",
                                   "reset", "activated"])
def test_login_banner_ignores_query_text(aa, text_):
    c = aa.test_client()
    page = c.get("/portal/login?" + urlencode({"m": text_})).get_data(as_text=True)
    assert 'class="flash"' not in page
    for shown in (text_, text_.replace("<", "&lt;").replace(">", "&gt;"), "alert(1)", "suspended",
                  "password was reset", "account is ready"):
        assert shown not in page
    other = c.get("/portal/forgot?" + urlencode({"m": text_})).get_data(as_text=True)
    assert 'class="flash"' not in other and "suspended" not in other and "alert(1)" not in other
    # a forged flash cookie is not shown either
    c.set_cookie("fs_portal_flash", "Your account is suspended", path="/portal")
    assert "suspended" not in c.get("/portal/login").get_data(as_text=True)
