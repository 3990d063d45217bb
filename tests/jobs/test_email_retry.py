"""An email SMTP did not take is retried by the queue until the SMTP server takes it."""
from __future__ import annotations

import dataclasses

from sqlalchemy import select

from fhirserver.jobs import DONE, job
from fhirserver.notify import EMAIL_JOB, send_email
from fhirserver.notify.tables import notify_outbox
from tests.conftest import free_port, run_smtp_server


def test_unsent_email_is_queued_and_delivered_later(services):  # noqa: ANN001
    down = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    with services.repo.engine.begin() as conn:
        pk = send_email(conn, down, "ann@example.org", "Hello", "body text")
    with services.repo.engine.connect() as c:
        row = c.execute(select(notify_outbox).where(notify_outbox.c.pk == pk)).mappings().one()
        queued = c.execute(select(job).where(job.c.kind == EMAIL_JOB)).mappings().all()
    assert row["sent"] is None and row["error"]
    assert len(queued) == 1 and queued[0]["run_at"] > queued[0]["created"]  # retried later, not at once
    for box in run_smtp_server():
        live = dataclasses.replace(services, settings=services.settings.replace(smtp_url=box.url))
        with services.repo.engine.begin() as c:  # make it due now
            c.execute(job.update().where(job.c.pk == queued[0]["pk"]).values(run_at=0))
        assert services.jobs.worker(live, threads=1).run_pending() == 1
        assert [m["subject"] for m in box.to("ann@example.org")] == ["Hello"]
    assert services.jobs.state(queued[0]["pk"])["state"] == DONE
    with services.repo.engine.connect() as c:
        assert c.execute(select(notify_outbox.c.sent).where(notify_outbox.c.pk == pk)).scalar()
