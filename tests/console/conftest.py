"""Fixtures of the console tests: the auth-on app with a real SMTP server (aiosmtpd), seeded
with the demo clinic and a second organization (Harbor Orthodontics) with its own staff member
and patient, and signed-in test clients for each staff member."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import app_fixture, run_smtp_server

from console_helpers import login, seed_two_orgs  # noqa: E402


@pytest.fixture(scope="session")
def console_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="session")
def console_session_app(settings, session_app, console_smtp, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=console_smtp.url), open_apps)


AUTH_TABLES = ("auth_token", "auth_code", "auth_session", "auth_user", "auth_failure", "lifecycle_invitation",
               "lifecycle_account", "lifecycle_email", "lifecycle_access_request", "notify_outbox",
               "portal_slot_booking", "portal_share_revocation", "dicom_instance", "dicom_series", "dicom_study",
               "dicom_node")


@pytest.fixture()
def capp(console_session_app, app, console_smtp):  # noqa: ANN001, ANN201
    """Auth-on app with SMTP, on an emptied database: the demo clinic and Harbor Orthodontics."""
    eng = console_session_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in AUTH_TABLES:
            c.execute(text(f"DELETE FROM {t}"))
    with console_smtp.lock:
        console_smtp.messages.clear()
    seed_two_orgs(console_session_app)
    return console_session_app


@pytest.fixture()
def moreno(capp):  # noqa: ANN001, ANN201
    """Dr. Moreno, staff of the demo clinic."""
    return login(capp, "staff@clinic.example")


@pytest.fixture()
def harbor(capp):  # noqa: ANN001, ANN201
    """Dr. Ruiz, staff of Harbor Orthodontics (the other organization)."""
    return login(capp, "ruiz@harbor.example")
