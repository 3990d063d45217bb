"""The outbox: every email the server sends (or would send without SMTP), on the core MetaData."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from fhirserver.storage import PK, metadata

notify_outbox = Table(
    "notify_outbox", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("patient_id", String(64), nullable=True),  # whose compartment the message belongs to ($erase)
    Column("created", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=True),  # None: not sent (no SMTP, or it failed)
    Column("error", Text, nullable=True),
    Index("ix_notify_outbox_patient", "patient_id"),
)

NOTIFY_TABLES = (notify_outbox,)
