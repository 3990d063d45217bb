"""Fixtures for the lifecycle tests: a real SMTP server (aiosmtpd) and the auth-on app sending to it."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import app_fixture, run_smtp_server


@pytest.fixture(scope="session")
def smtp_server():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="session")
def lc_session_app(settings, session_app, smtp_server, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=smtp_server.url), open_apps)


@pytest.fixture()
def lapp(lc_session_app, app, smtp_server):  # noqa: ANN001, ANN201
    """Auth-on app with SMTP, on an emptied database."""
    eng = lc_session_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in ("auth_token", "auth_code", "auth_session", "auth_user", "oauth_client", "lifecycle_invitation",
                  "lifecycle_account", "lifecycle_email", "lifecycle_access_request", "notify_outbox"):
            c.execute(text(f"DELETE FROM {t}"))
    with smtp_server.lock:
        smtp_server.messages.clear()
    return lc_session_app
