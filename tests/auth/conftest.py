"""Fixtures for the authorization server tests: an app with auth ON on the test database."""
from __future__ import annotations

import pytest

from tests.conftest import AUTH_TABLES, app_fixture, emptied


@pytest.fixture(scope="session")
def secure_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def sapp(secure_app, app):  # noqa: ANN001, ANN201
    """The auth-on app, on an emptied database (the `app` fixture empties it)."""
    return emptied(secure_app, AUTH_TABLES)


@pytest.fixture()
def engine(sapp):  # noqa: ANN001, ANN201
    return sapp.extensions["fhirserver"].repo.engine


@pytest.fixture()
def open_client(app):  # noqa: ANN001, ANN201
    """No-auth client on the same database, to seed data."""
    return app.test_client()
