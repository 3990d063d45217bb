"""Fixtures of the subscription tests: emptied subscription tables, a loopback receiver and an
in-process delivery worker on the test database (fast retries so failures end in seconds)."""
from __future__ import annotations

import pytest
from sqlalchemy import delete

from fhirserver.subscriptions.tables import SUBSCRIPTION_TABLES
from fhirserver.subscriptions.worker import Worker
from subs_helpers import Receiver


@pytest.fixture()
def clean_subs(app):  # noqa: ANN001, ANN201
    with app.extensions["fhirserver"].repo.engine.begin() as c:
        for t in reversed(SUBSCRIPTION_TABLES):
            c.execute(delete(t))
    return app


@pytest.fixture()
def receiver():  # noqa: ANN201
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def worker_settings(settings):  # noqa: ANN001, ANN201
    return settings.replace(subscription_backoff_seconds=0.2, subscription_attempts=3,
                            subscription_lease_seconds=5, subscription_poll_seconds=0.05)


@pytest.fixture()
def worker(clean_subs, worker_settings):  # noqa: ANN001, ANN201
    w = Worker(clean_subs.extensions["fhirserver"].repo, worker_settings).start()
    yield w
    w.stop()
