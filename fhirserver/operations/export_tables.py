"""`bulk_export`: one row per `$export` request (its parameters, owner, state and manifest)."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from fhirserver.storage import metadata

bulk_export = Table(
    "bulk_export", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(400), nullable=False),        # who may poll, cancel and download
    Column("level", String(16), nullable=False),         # system | patient | group
    Column("group_id", String(64), nullable=True),
    Column("params", Text, nullable=False),              # JSON: types, since, type_filters, patients
    Column("request", Text, nullable=False),             # the kick-off URL
    Column("state", String(16), nullable=False),         # accepted | running | completed | failed | cancelled
    Column("job_pk", BigInteger, nullable=True),
    Column("transaction_time", String(40), nullable=True),
    Column("progress", String(300), nullable=True),
    Column("output", Text, nullable=True),               # JSON: manifest output[] and error[]
    Column("error_text", Text, nullable=True),
    Column("created", BigInteger, nullable=False),       # epoch ms
    Column("expires", BigInteger, nullable=False),       # epoch ms: files and status gone after
    Index("ix_bulk_export_expires", "expires"),
)

EXPORT_TABLES = (bulk_export,)
