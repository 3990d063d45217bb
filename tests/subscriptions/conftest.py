"""Fixtures of the subscription tests: emptied subscription tables, a loopback receiver and an
in-process delivery worker on the test database (fast retries so failures end in seconds)."""
from __future__ import annotations

import pytest
from sqlalchemy import delete

from fhirserver.jobs import job
from fhirserver.subscriptions import register_jobs
from fhirserver.subscriptions.tables import SUBSCRIPTION_TABLES
from subs_helpers import Receiver
from tests.conftest import AUTH_TABLES, app_fixture, emptied


def _empty(app) -> None:  # noqa: ANN001
    with app.extensions["fhirserver"].repo.engine.begin() as c:
        for t in reversed(SUBSCRIPTION_TABLES):
            c.execute(delete(t))
        c.execute(delete(job).where(job.c.kind.like("subscriptions.%")))


@pytest.fixture()
def clean_subs(app):  # noqa: ANN001, ANN201
    """Empty subscription tables and jobs, before and after (no subscription outlives its test)."""
    _empty(app)
    yield app
    _empty(app)


@pytest.fixture()
def receiver():  # noqa: ANN201
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def worker_settings(settings):  # noqa: ANN001, ANN201
    return settings.replace(subscription_backoff_seconds=0.2, subscription_attempts=3,
                            subscription_lease_seconds=5)


@pytest.fixture()
def worker(clean_subs, worker_settings):  # noqa: ANN001, ANN201
    """Job worker threads of the test app, its subscription kinds with fast retries."""
    services = clean_subs.extensions["fhirserver"]
    register_jobs(services.jobs, services.repo, worker_settings)
    w = services.jobs.worker(services, threads=2, poll_seconds=0.05).start()
    yield w
    services.jobs.stop()
    register_jobs(services.jobs, services.repo, services.settings)


@pytest.fixture(scope="session")
def gate_session_app(settings, session_app, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False), open_apps)


@pytest.fixture()
def world(gate_session_app, app, clean_subs):  # noqa: ANN001, ANN201
    """tests/access's world of two organizations, on the auth-on app (tokens as the gate sees them)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "access"))
    from access_helpers import World

    return World(emptied(gate_session_app, AUTH_TABLES), app)
