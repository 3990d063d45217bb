"""Tables of the patients' lifecycle (migration 0005, branch "lifecycle").

Secrets are stored as digests (invitation tokens SHA-256, security answers argon2). Times are
integer seconds since the epoch (UTC).
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, String, Table, Text

from fhirserver.storage import PK, metadata

# single-use, expiring activation links; a new invitation supersedes the older ones
lifecycle_invitation = Table(
    "lifecycle_invitation", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("res_type", String(64), nullable=False),  # Patient | RelatedPerson
    Column("res_id", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("user_pk", BigInteger, nullable=False),
    Column("invited_by", String(140), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Column("superseded", Boolean, nullable=False, default=False),
    Index("ix_lifecycle_invitation_res", "res_type", "res_id"),
)

# accounts created by invitations: what activation sets, and whether the password must change
lifecycle_account = Table(
    "lifecycle_account", metadata,
    Column("user_pk", BigInteger, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("mobile", String(40), nullable=True),
    Column("security_question", Text, nullable=True),
    Column("security_answer_hash", Text, nullable=True),
    Column("must_change_password", Boolean, nullable=False, default=False),
    Column("activated", BigInteger, nullable=True),  # None: invited, not yet activated
    Column("status", String(16), nullable=False, default="invited"),  # invited|active|closed
    Index("ix_lifecycle_account_res", "res_type", "res_id"),
)

# emails that cannot be used for a new profile: owned accounts, unlinked or closed profiles
lifecycle_email = Table(
    "lifecycle_email", metadata,
    Column("email", String(320), primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # owned | unlinked | closed | deleted
)

# access requests from staff of another organization, waiting for the patient's answer
lifecycle_access_request = Table(
    "lifecycle_access_request", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("organization", String(64), nullable=False),
    Column("requested_by", String(140), nullable=True),
    Column("scope", String(16), nullable=False, default="all"),  # all | imaging
    Column("status", String(16), nullable=False, default="pending"),  # pending|accepted|rejected
    Column("created", BigInteger, nullable=False),
    Index("ix_lifecycle_access_request_patient", "patient_id"),
)

LIFECYCLE_TABLES = (lifecycle_invitation, lifecycle_account, lifecycle_email, lifecycle_access_request)
