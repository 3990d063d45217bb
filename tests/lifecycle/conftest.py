"""Fixtures for the lifecycle tests: a real SMTP server (aiosmtpd) and the auth-on app sending to it."""
from __future__ import annotations

import pytest

from tests.conftest import app_fixture, emptied, run_smtp_server
from tests.lifecycle.lc_helpers import LIFECYCLE_TABLES


@pytest.fixture(scope="session")
def smtp_server():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="session")
def lc_session_app(settings, session_app, smtp_server, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=smtp_server.url), open_apps)


@pytest.fixture()
def lapp(lc_session_app, app, smtp_server):  # noqa: ANN001, ANN201
    """Auth-on app with SMTP, on an emptied database."""
    return emptied(lc_session_app, LIFECYCLE_TABLES, smtp_server)
