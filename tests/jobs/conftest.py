"""Fixtures for the job queue tests: the app's services on an emptied `job` table."""
from __future__ import annotations

import pytest
from sqlalchemy import text


@pytest.fixture()
def services(app):  # noqa: ANN001, ANN201
    svc = app.extensions["fhirserver"]
    with svc.repo.engine.begin() as c:
        c.execute(text("DELETE FROM job"))
    yield svc
    svc.jobs.stop()
