"""Tables of the portal (migration 0006, branch "portal")."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from fhirserver.storage import metadata

# one row per booked Slot: the primary key makes double booking impossible (checked by the
# database in the same transaction that creates the Appointment and marks the Slot busy)
portal_slot_booking = Table(
    "portal_slot_booking", metadata,
    Column("slot_id", String(64), primary_key=True),
    Column("appointment_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),
)

# share links of a report issued before `revoked_at` no longer open
portal_share_revocation = Table(
    "portal_share_revocation", metadata,
    Column("report_id", String(64), primary_key=True),
    Column("revoked_at", BigInteger, nullable=False),
)

PORTAL_TABLES = (portal_slot_booking, portal_share_revocation)
