"""Fixtures for $export: the auth-on app, backend-services clients with RS384 keys, the job runner."""
from __future__ import annotations

import pytest

from tests.conftest import AUTH_TABLES, app_fixture, emptied


@pytest.fixture(scope="session")
def export_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def xapp(export_app, app):  # noqa: ANN001, ANN201
    yield emptied(export_app, (*AUTH_TABLES, "job", "bulk_export"))
    export_app.extensions["fhirserver"].jobs.stop()


@pytest.fixture()
def run_jobs(xapp):  # noqa: ANN001, ANN201
    """Run every due job now, in this thread (the worker `serve` would run)."""
    services = xapp.extensions["fhirserver"]
    worker = services.jobs.worker(services, threads=1)
    return worker.run_pending
