"""Fixtures of the portal tests: the auth-on app with a real SMTP server (aiosmtpd), seeded with
the demo clinic, and a signed-in test client."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import text

from tests.conftest import app_fixture, run_smtp_server


@pytest.fixture(scope="session")
def portal_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="session")
def portal_session_app(settings, session_app, portal_smtp, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=portal_smtp.url), open_apps)


AUTH_TABLES = ("auth_token", "auth_code", "auth_session", "auth_user", "lifecycle_invitation", "lifecycle_account",
               "lifecycle_email", "lifecycle_access_request", "notify_outbox", "portal_slot_booking",
               "portal_share_revocation")


@pytest.fixture()
def papp(portal_session_app, app, portal_smtp):  # noqa: ANN001, ANN201
    """Auth-on app with SMTP, on an emptied database seeded with the demo clinic."""
    from portal.demo import seed

    eng = portal_session_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in AUTH_TABLES:
            c.execute(text(f"DELETE FROM {t}"))
    with portal_smtp.lock:
        portal_smtp.messages.clear()
    seed(portal_session_app)
    return portal_session_app


from portal_helpers import ARGS, ART, CHROMIUM, free_port, login  # noqa: E402

# the clinic as the browser tests' server presents it (Settings through FHIRSERVER_* variables)
DEV_CLINIC = {"FHIRSERVER_CLINIC_NAME": "Sunrise Dental & Imaging Clinic", "FHIRSERVER_CLINIC_TIMEZONE": "Europe/Madrid",
              "FHIRSERVER_CLINIC_ADDRESS": "Calle Mayor 1, 28013 Madrid", "FHIRSERVER_CLINIC_TAX_ID": "ES-B12345678"}


@pytest.fixture()
def ana(papp):  # noqa: ANN001, ANN201
    return login(papp)


@pytest.fixture()
def dev_env(database_url, portal_smtp, tmp_path):  # noqa: ANN001, ANN201
    """The environment of the live `serve --dev` (and of CLI commands run against its database)."""
    url = database_url if database_url.startswith("postgres") else f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    return dict(os.environ, FHIRSERVER_DATABASE_URL=url, FHIRSERVER_DATA_DIR=str(tmp_path),
                FHIRSERVER_SMTP_URL=portal_smtp.url, **DEV_CLINIC)


@pytest.fixture()
def dev_server(papp, dev_env, tmp_path):  # noqa: ANN001, ANN201
    """A live `serve --dev` for one test, sending its email to the test's aiosmtpd server. `papp`
    resets the shared database on PostgreSQL (auth tables, bookings) and seeds the demo clinic."""
    port = free_port()
    # On SQLite the demo server gets a database of its own: under pytest-xdist, sharing the
    # worker's SQLite file with a second multi-process server once left it unreadable ("file is
    # not a database") for the tests after it; PostgreSQL is shared as in production. The test
    # process never opens that SQLite file itself.
    env = dev_env
    log_path = tmp_path / "server.log"  # a file, not a pipe: an unread pipe fills up and blocks the server
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--dev", "--port", str(port),
                                 "--workers", "2", "--dicom-port", "0"], env=env, stdout=subprocess.DEVNULL,
                                stderr=log)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
            try:
                if requests.get(root + "/portal/login", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting
                time.sleep(0.3)
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture()
def browser():  # noqa: ANN201
    ART.mkdir(exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
