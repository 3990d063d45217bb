"""The subscriptions' tables, on the core MetaData.

- `subscription_state`: the server's side of each Subscription resource (its parsed channel and
  filters, its status, who created it, its event counter).
- `subscription_event`: the outbox. A row is written in the same transaction as the write that
  caused it, so an event exists exactly when its write committed.
- `subscription_delivery`: one notification to send (handshake, heartbeat or event), leased by a
  worker while it sends, retried with backoff; the event rows are what `$events` answers.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhirserver.storage import PK, metadata

subscription_state = Table(
    "subscription_state", metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("status", String(16), nullable=False),      # requested | active | error | off
    Column("spec", Text, nullable=False),              # JSON: endpoint, headers, payload, filters
    Column("owner", Text, nullable=True),              # JSON: the principal who wrote it
    Column("event_count", BigInteger, nullable=False, default=0),
    Column("created", BigInteger, nullable=False),     # ms: events before it are not its
    Column("last_sent", BigInteger, nullable=True),    # ms: for heartbeats
    Column("error", Text, nullable=True),
    Index("ix_subscription_state_topic", "topic", "status"),
)

subscription_event = Table(
    "subscription_event", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("created", BigInteger, nullable=False),     # ms
    Column("dispatched", Boolean, nullable=False, default=False),
    Index("ix_subscription_event_pending", "dispatched", "pk"),
)

subscription_delivery = Table(
    "subscription_delivery", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("sub_id", String(64), nullable=False),
    Column("kind", String(24), nullable=False),        # handshake | heartbeat | event-notification
    Column("event_number", BigInteger, nullable=True),
    Column("res_type", String(64), nullable=True),
    Column("res_id", String(64), nullable=True),
    Column("version_id", Integer, nullable=True),
    Column("event_time", BigInteger, nullable=False),  # ms
    Column("state", String(12), nullable=False),       # pending | sent | failed | dropped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", BigInteger, nullable=False),  # ms
    Column("lease_until", BigInteger, nullable=True),  # ms: a worker is sending it until then
    Column("sent_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_subscription_delivery_due", "state", "next_attempt"),
    Index("ix_subscription_delivery_sub", "sub_id", "event_number"),
)

SUBSCRIPTION_TABLES = (subscription_state, subscription_event, subscription_delivery)
