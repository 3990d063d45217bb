"""Shared stamps: one counter per broadcast channel (revocations, clients, signing keys), so
every host on the database sees a change at once (branch "shared").

Revision ID: 0013_shared
Revises: 0011_subscriptions
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_shared"
down_revision = "0011_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcast_stamp",
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("stamp", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broadcast_stamp")
