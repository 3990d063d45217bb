"""Fixtures of the access-gate suites: the auth-on app on an emptied database and a small world
of two organizations, their patients, a guardian, staff and organization-bound backend clients."""
from __future__ import annotations

import pytest

from fhirserver.app import create_app
from tests.conftest import AUTH_TABLES, emptied


@pytest.fixture(scope="session")
def gate_session_app(settings, session_app):  # noqa: ANN001, ANN201
    return create_app(settings.replace(insecure_no_auth=False))


@pytest.fixture()
def gate_app(gate_session_app, app):  # noqa: ANN001, ANN201
    """The auth-on app, on an emptied database (the `app` fixture empties the resources)."""
    return emptied(gate_session_app, AUTH_TABLES)


@pytest.fixture()
def world(gate_app, app):  # noqa: ANN001, ANN201
    from access_helpers import World

    return World(gate_app, app)
