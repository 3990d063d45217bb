"""Fixtures for the authorization server tests: an app with auth ON on the test database."""
from __future__ import annotations

import pytest

from fhirserver.app import create_app
from tests.conftest import AUTH_TABLES, emptied


@pytest.fixture(scope="session")
def secure_app(settings, session_app):  # noqa: ANN001, ANN201
    return create_app(settings.replace(insecure_no_auth=False))


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
