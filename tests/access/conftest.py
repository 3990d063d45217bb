"""Fixtures of the access-gate suites: the auth-on app on an emptied database and a small world
of two organizations, their patients, a guardian, staff and organization-bound backend clients."""
from __future__ import annotations

import pytest

from tests.conftest import AUTH_TABLES, app_fixture, emptied


@pytest.fixture(scope="session")
def gate_session_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def gate_app(gate_session_app, app):  # noqa: ANN001, ANN201
    """The auth-on app, on an emptied database (the `app` fixture empties the resources)."""
    return emptied(gate_session_app, AUTH_TABLES)


@pytest.fixture()
def world(gate_app, app):  # noqa: ANN001, ANN201
    from access_helpers import World

    return World(gate_app, app)
