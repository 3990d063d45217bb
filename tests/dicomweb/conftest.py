"""Fixtures of the DICOMweb tests: emptied DICOM tables, the auth-on app on the test database."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, text

from dicom.tables import DICOM_TABLES
from dicom.web import flush_audits
from tests.conftest import app_fixture


@pytest.fixture()
def dw(app, client):  # noqa: ANN001, ANN201
    """The no-auth test client with empty DICOM tables (and, via `app`, an empty FHIR store)."""
    with app.extensions["fhirserver"].repo.engine.begin() as conn:
        for table in reversed(DICOM_TABLES):
            conn.execute(delete(table))
    yield client
    flush_audits(app)  # no AuditEvent of this test lands in the next test's database


@pytest.fixture(scope="session")
def dw_secure_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def dw_secure(dw_secure_app, dw):  # noqa: ANN001, ANN201
    """The auth-on app on the same (emptied) database; tokens made directly in the token table."""
    with dw_secure_app.extensions["fhirserver"].repo.engine.begin() as c:
        c.execute(text("DELETE FROM auth_token"))
    yield dw_secure_app
    flush_audits(dw_secure_app)
