"""kill -9 of the job worker (`fhirserver worker`) in the middle of a notification POST: the event
is not lost, it arrives once a worker runs again (after the dead worker's job lease ran out)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlalchemy import create_engine, select, text

from fhirserver.subscriptions.tables import subscription_delivery
from subs_helpers import JSON, STUDY_TOPIC, event_numbers, study, subscription, wait_for
from tests.conftest import built_app


@pytest.fixture()
def own_db(settings, tmp_path):  # noqa: ANN001, ANN201
    """An app on a database of its own: no other test's server runs job workers on it."""
    url = settings.database_url
    if url.startswith("postgres"):
        head, _, name = url.rpartition("/")
        own = f"{name}_crash"
        admin = create_engine(f"{head}/postgres".replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{own}"'))
        own_url = f"{head}/{own}"
    else:
        admin, own_url = None, f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    own_settings = settings.replace(database_url=own_url, data_dir=tmp_path / "data")
    with built_app(own_settings, upgrade_schema=True) as app:
        yield app, own_settings
    if admin is not None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)'))
        admin.dispose()


def _worker(settings, tmp_path) -> subprocess.Popen:  # noqa: ANN001
    env = dict(os.environ, FHIRSERVER_SUBSCRIPTION_LEASE_SECONDS="3", FHIRSERVER_JOB_POLL_SECONDS="0.05",
               FHIRSERVER_BASE_URL="http://testserver")
    log = open(tmp_path / "worker.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "worker", "--database-url",
                             settings.database_url, "--data-dir", str(tmp_path)],
                            env=env, stdout=log, stderr=log)


def test_kill_9_mid_delivery_then_the_event_arrives(own_db, receiver, tmp_path):  # noqa: ANN001
    app, settings = own_db
    client, repo = app.test_client(), app.extensions["fhirserver"].repo
    first = _worker(settings, tmp_path)
    second = None
    try:
        client.put("/fhir/Patient/p0", json={"resourceType": "Patient", "id": "p0"}, headers=JSON)
        sid = json.loads(client.post("/fhir/Subscription", json=subscription(STUDY_TOPIC, receiver.url),
                                     headers=JSON).data)["id"]
        wait_for(lambda: json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)["status"]
                 == "active", timeout=60)
        receiver.hold = threading.Event()  # the next POST hangs: the worker is mid-delivery
        receiver.arrived.clear()
        client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
        assert receiver.arrived.wait(60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        receiver.hold.set()
        receiver.hold = None
        with repo.engine.connect() as c:  # the dead worker never recorded it as sent
            states = c.execute(select(subscription_delivery.c.state).where(
                subscription_delivery.c.kind == "event-notification")).scalars().all()
        assert states == ["pending"]
        second = _worker(settings, tmp_path)
        wait_for(lambda: len(receiver.events()) == 2, timeout=150)  # the longest job lease (60 s)
        assert [event_numbers(b) for b in receiver.events()] == [[1], [1]]  # the same event, again
        wait_for(lambda: _sent(repo), timeout=30)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def _sent(repo) -> bool:  # noqa: ANN001
    with repo.engine.connect() as c:
        return c.execute(select(subscription_delivery.c.state).where(
            subscription_delivery.c.kind == "event-notification")).scalars().all() == ["sent"]
