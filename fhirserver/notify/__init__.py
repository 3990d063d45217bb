"""Outbox of emails: every message is a row in `notify_outbox`; with `FHIRSERVER_SMTP_URL` it is
also sent over SMTP at once (the row records when, or the error). Without SMTP the `--dev` mail
page (`/portal/dev/mail`, portal issue) shows the outbox.

SMTP URL: `smtp://[user:password@]host[:port]`, `smtps://...` (TLS), `smtp+starttls://...`.
A message SMTP refused or could not take is handed to the job queue (job kind `email.send`, in
the same transaction as its outbox row), which retries it with backoff until it is sent or gives up.
"""
from __future__ import annotations

import logging
import smtplib
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, insert, select, update

from fhirserver.jobs import insert_job, now_ms
from fhirserver.notify.tables import notify_outbox

log = logging.getLogger("fhirserver.notify")
FROM_ADDRESS = "no-reply@fhirserver.local"


def _smtp_send(smtp_url: str, to: str, subject: str, body: str) -> None:
    u = urlsplit(smtp_url)
    port = u.port or (465 if u.scheme == "smtps" else 25)
    cls = smtplib.SMTP_SSL if u.scheme == "smtps" else smtplib.SMTP
    msg = EmailMessage()
    msg["From"] = FROM_ADDRESS
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with cls(u.hostname or "localhost", port, timeout=15) as s:
        if u.scheme == "smtp+starttls":
            s.starttls()
        if u.username:
            s.login(unquote(u.username), unquote(u.password or ""))
        s.send_message(msg)


def send_email(conn: Any, smtp_url: str, to: str, subject: str, body: str,
               patient_id: str | None = None) -> int:
    """Queue a message in the outbox (in the caller's transaction) and send it when SMTP is set."""
    t = int(time.time())
    pk = conn.execute(insert(notify_outbox).values(
        recipient=to, subject=subject, body=body, patient_id=patient_id, created=t)
        .returning(notify_outbox.c.pk)).scalar_one()
    if smtp_url:
        try:
            _smtp_send(smtp_url, to, subject, body)
            conn.execute(update(notify_outbox).where(notify_outbox.c.pk == pk).values(sent=int(time.time())))
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("could not send email %s: %s", pk, exc)
            conn.execute(update(notify_outbox).where(notify_outbox.c.pk == pk).values(error=str(exc)[:500]))
            insert_job(conn, EMAIL_JOB, {"outbox": pk}, {"system": "email"},
                                 run_at_ms=now_ms() + 30_000, dedupe_key=f"email:{pk}", max_attempts=8)
    return pk


EMAIL_JOB = "email.send"


def deliver_job(ctx: Any) -> None:
    """Job `email.send`: send one outbox message SMTP did not take at first (raises to retry)."""
    pk = ctx.payload["outbox"]
    engine, smtp_url = ctx.services.repo.engine, ctx.services.settings.smtp_url
    with engine.connect() as c:
        row = c.execute(select(notify_outbox).where(notify_outbox.c.pk == pk)).mappings().first()
    if row is None or row["sent"] is not None or not smtp_url:
        return  # erased, already sent, or SMTP switched off: nothing to deliver
    try:
        _smtp_send(smtp_url, row["recipient"], row["subject"], row["body"])
    except (OSError, smtplib.SMTPException) as exc:
        with engine.begin() as c:
            c.execute(update(notify_outbox).where(notify_outbox.c.pk == pk).values(error=str(exc)[:500]))
        raise
    with engine.begin() as c:
        c.execute(update(notify_outbox).where(notify_outbox.c.pk == pk).values(sent=int(time.time()), error=None))


def outbox(engine: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The latest messages, newest first (for the `--dev` mail page)."""
    with engine.connect() as c:
        rows = c.execute(select(notify_outbox).order_by(notify_outbox.c.pk.desc()).limit(limit)).mappings()
        return [dict(r) for r in rows]


__all__ = ["EMAIL_JOB", "deliver_job", "notify_outbox", "outbox", "send_email"]


def pending_count(engine: Any) -> int:
    """Emails in the outbox not sent yet."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(notify_outbox)
                            .where(notify_outbox.c.sent.is_(None))).scalar_one()
