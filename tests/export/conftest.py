"""Fixtures for $export: the auth-on app, backend-services clients with RS384 keys, the job runner."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import app_fixture


@pytest.fixture(scope="session")
def export_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def xapp(export_app, app):  # noqa: ANN001, ANN201
    eng = export_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in ("auth_token", "auth_code", "auth_session", "auth_launch", "auth_jti", "auth_user",
                  "oauth_client", "job", "bulk_export"):
            c.execute(text(f"DELETE FROM {t}"))
    yield export_app
    export_app.extensions["fhirserver"].jobs.stop()


@pytest.fixture()
def run_jobs(xapp):  # noqa: ANN001, ANN201
    """Run every due job now, in this thread (the worker `serve` would run)."""
    services = xapp.extensions["fhirserver"]
    worker = services.jobs.worker(services, threads=1)
    return worker.run_pending
