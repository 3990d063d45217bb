"""`close_app`: an app that is done leaves nothing running (threads, listener, pool) and its
audit writer's last batch is in the database (a clean stop loses no AuditEvent)."""
from __future__ import annotations

import json
import threading
import time
import uuid

from sqlalchemy import select, text

from fhirserver.app import close_app, create_app, start_jobs
from fhirserver.storage.tables import resource
from tests.conftest import built_app


def _exercise(app) -> None:  # noqa: ANN001
    """Start every background part an app can have: job workers, audit writer, listener."""
    services = app.extensions["fhirserver"]
    start_jobs(app)
    services.broadcast.stamp("test.close")  # PostgreSQL: starts the LISTEN thread
    services.audit.record(who={"client_id": "close-test"}, action="R", interaction="read", references=[])
    assert app.test_client().get("/fhir/metadata").status_code == 200  # a pooled connection


def _audited(app, marker: str) -> int:  # noqa: ANN001
    """AuditEvents in the database recorded for the client `marker`."""
    with app.extensions["fhirserver"].repo.engine.connect() as c:
        bodies = c.execute(select(resource.c.body).where(resource.c.res_type == "AuditEvent")).scalars()
        return sum(1 for b in bodies if _json(b)["agent"][0].get("altId") == marker)


def _json(body):  # noqa: ANN001, ANN202
    return json.loads(body) if isinstance(body, (str, bytes)) else body


def _own_sessions(engine, database: str) -> int:  # noqa: ANN001
    """PostgreSQL sessions on `database` other than the one asking."""
    with engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                              "AND pid <> pg_backend_pid()"), {"d": database}).scalar_one()


def test_close_ends_every_thread_of_the_app_and_is_idempotent(app, settings) -> None:  # noqa: ANN001
    before = set(threading.enumerate())
    built = create_app(settings.replace(job_threads=2, job_poll_seconds=0.05))
    _exercise(built)
    services = built.extensions["fhirserver"]
    started = set(threading.enumerate()) - before
    names = {t.name for t in started}
    assert {"audit-writer", "fhirserver-job-0", "fhirserver-job-leases"} <= names, names
    if services.repo.postgres:
        assert {"fhirserver-broadcast", "fhirserver-job-listen"} <= names, names
    close_app(built)
    assert [t.name for t in started if t.is_alive()] == []
    assert services.closed
    close_app(built)  # a second close (worker_exit after a fixture's) is a no-op
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []


def test_the_last_batch_is_written_on_close(app, settings) -> None:  # noqa: ANN001
    marker = f"close-{uuid.uuid4().hex[:8]}"
    with built_app(settings) as built:
        audit = built.extensions["fhirserver"].audit
        audit.interval = 3600.0  # the writer would not flush on its own before the close
        for _ in range(7):
            audit.record(who={"client_id": marker}, action="R", interaction="read", references=["Patient/x"])
        assert _audited(app, marker) == 0  # still queued
    assert _audited(app, marker) == 7
    # a record arriving after the close (a request still finishing) is written by its caller
    audit.record(who={"client_id": marker}, action="R", interaction="read", references=[])
    assert _audited(app, marker) == 8
    assert audit._thread is None  # and no writer was started again


def test_apps_built_and_closed_leave_no_threads_or_connections(app, settings, database_url) -> None:  # noqa: ANN001
    """Five apps one after another (as the suite builds them): the process ends with the
    threads and, on PostgreSQL, the database sessions it started with."""
    from sqlalchemy.engine import make_url

    engine = app.extensions["fhirserver"].repo.engine
    database = make_url(database_url).database or ""
    threads_before = len(threading.enumerate())
    sessions_before = _own_sessions(engine, database) if database_url.startswith("postgres") else 0
    for _ in range(5):
        with built_app(settings.replace(job_threads=2, job_poll_seconds=0.05)) as built:
            _exercise(built)
    assert len(threading.enumerate()) == threads_before, [t.name for t in threading.enumerate()]
    if database_url.startswith("postgres"):
        # a closed connection's backend leaves pg_stat_activity a moment after the socket closes;
        # the session app's own pool may have opened one more meanwhile
        deadline = time.monotonic() + 10
        while (now := _own_sessions(engine, database)) > sessions_before + 1:
            assert time.monotonic() < deadline, (sessions_before, now)
            time.sleep(0.1)
