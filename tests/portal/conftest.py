"""Fixtures of the portal tests: the auth-on app with a real SMTP server (aiosmtpd), seeded with
the demo clinic, and a signed-in test client."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from fhirserver.app import create_app
from tests.conftest import run_smtp_server


@pytest.fixture(scope="session")
def portal_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="session")
def portal_session_app(settings, session_app, portal_smtp):  # noqa: ANN001, ANN201
    return create_app(settings.replace(insecure_no_auth=False, smtp_url=portal_smtp.url))


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


from portal_helpers import login  # noqa: E402


@pytest.fixture()
def ana(papp):  # noqa: ANN001, ANN201
    return login(papp)
