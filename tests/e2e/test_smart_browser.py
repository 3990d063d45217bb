"""The SMART standalone launch as a real app runs it: `fhirclient` (smart-on-fhir/client-py) is
the app, Debian's chromium driven by Playwright is the user filling the login and consent pages,
against `fhirserver serve` with auth on (real gunicorn workers). The client and the user are
registered with the CLI while the server runs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import LiveServer

fhirclient = pytest.importorskip("fhirclient")
playwright_sync = pytest.importorskip("playwright.sync_api")

from fhirclient import client as fc_client  # noqa: E402
from fhirclient.models.observation import Observation as FcObservation  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REDIRECT = "http://smart-app.test/callback"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


class AuthLiveServer(LiveServer):
    """`fhirserver serve` with auth on (the default), plus the CLI on the same database."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        super().__init__(database_url, data_dir, auth=True)

    def cli(self, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "fhirserver.cli", *args], env=self.env, check=True,
                             capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def auth_server(session_app, database_url, tmp_path_factory):  # noqa: ANN001, ANN201
    server = AuthLiveServer(database_url, tmp_path_factory.mktemp("auth-live"))
    yield server
    server.stop()


def _seed(app) -> None:  # noqa: ANN001
    c = app.test_client()
    docs = [{"resourceType": "Patient", "id": "pa", "name": [{"given": ["Alma"], "family": "Ruiz"}]},
            {"resourceType": "Patient", "id": "pb", "name": [{"given": ["Bruno"], "family": "Diaz"}]}]
    for pid in ("pa", "pb"):
        docs.append({"resourceType": "Observation", "id": f"o-{pid}", "status": "final", "code": {"text": "HbA1c"},
                     "subject": {"reference": f"Patient/{pid}"}})
    for d in docs:
        r = c.put(f"/fhir/{d['resourceType']}/{d['id']}", json=d, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code in (200, 201)


def _browser_login(url: str, username: str, password: str, untick: tuple[str, ...] = ()) -> str:
    """Open the authorize URL, sign in, allow; returns the callback URL the app receives."""
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            captured: list[str] = []

            def _callback(route):  # noqa: ANN001, ANN202
                captured.append(route.request.url)
                route.fulfill(status=200, content_type="text/html", body="<p>app callback</p>")

            page.route(REDIRECT + "*", _callback)
            page.route(REDIRECT + "?*", _callback)
            page.goto(url)
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("#allow")
            assert "Browser App" in page.inner_text("#app-name")
            for scope in untick:
                page.locator(f'input[data-scope="{scope}"]').uncheck()
            page.get_by_role("button", name="Allow").click()
            deadline = time.time() + 15
            while not captured and time.time() < deadline:
                page.wait_for_timeout(100)
            assert captured, page.content()[:1000]
            return captured[0]
        finally:
            browser.close()


def test_standalone_launch_with_fhirclient_and_browser(auth_server, app):  # noqa: ANN001
    _seed(app)
    scopes = "launch/patient openid fhirUser offline_access patient/*.rs"
    cl = auth_server.cli("client", "add", "--name", "Browser App", "--redirect-uri", REDIRECT,
                         "--scope", scopes)
    auth_server.cli("user", "add", "alma", "--role", "patient", "--fhir-user", "Patient/pa",
                    "--password", "alma-secret-1")
    smart = fc_client.FHIRClient(settings={"app_id": cl["client_id"], "api_base": auth_server.base,
                                           "redirect_uri": REDIRECT, "scope": scopes.replace("launch/patient ", "")})
    url = smart.authorize_url
    assert "code_challenge_method=S256" in url and "aud=" in url
    callback = _browser_login(url, "alma", "alma-secret-1")
    smart.handle_callback(callback)
    assert smart.ready and smart.patient_id == "pa"
    assert smart.patient.name[0].family == "Ruiz"
    obs = FcObservation.where(struct={}).perform_resources(smart.server)
    assert [o.id for o in obs] == ["o-pa"]
    # patient A's token on patient B's data: absent
    r = requests.get(auth_server.base + "/Patient/pb", headers={"Authorization": f"Bearer {smart.server.auth.access_token}"})
    assert r.status_code == 404
    # refresh (rotation), then revoke: the refresh token's family ends, its access tokens too
    old_access = smart.server.auth.access_token
    assert smart.reauthorize()
    new_access = smart.server.auth.access_token
    assert new_access != old_access
    assert requests.get(auth_server.base + "/Patient/pa",
                        headers={"Authorization": f"Bearer {new_access}"}).status_code == 200
    r = requests.post(auth_server.root + "/auth/revoke",
                      data={"token": smart.server.auth.refresh_token, "client_id": cl["client_id"]})
    assert r.status_code == 200
    r = requests.get(auth_server.base + "/Patient/pa", headers={"Authorization": f"Bearer {new_access}"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_backend_service_on_live_server(auth_server, app):  # noqa: ANN001
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    _seed(app)
    key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1"}, private=True)
    cl = auth_server.cli("client", "add", "--name", "EHR", "--backend", "--jwks",
                         json.dumps({"keys": [key.as_dict(private=False)]}), "--scope", "system/*.rs")
    t = int(time.time())
    assertion = jwt.encode({"alg": "RS384", "kid": "ehr-1"},
                           {"iss": cl["client_id"], "sub": cl["client_id"], "aud": auth_server.root + "/auth/token",
                            "exp": t + 120, "jti": f"j-{t}"}, key, algorithms=["RS384"])
    r = requests.post(auth_server.root + "/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    tok = r.json()["access_token"]
    b = requests.get(auth_server.base + "/Patient", headers={"Authorization": f"Bearer {tok}"}).json()
    assert {e["resource"]["id"] for e in b["entry"]} >= {"pa", "pb"}
    assert requests.get(auth_server.base + "/Patient").status_code == 401
