"""Topic-based subscriptions: the server's state of each Subscription, the outbox of events and
the deliveries (branch "subscriptions").

Revision ID: 0011_subscriptions
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_subscriptions"
down_revision = "0010_jobs"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("sub_id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("last_sent", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_subscription_state_topic", "subscription_state", ["topic", "status"])
    op.create_table(
        "subscription_event",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("dispatched", sa.Boolean, nullable=False),
    )
    op.create_index("ix_subscription_event_pending", "subscription_event", ["dispatched", "pk"])
    op.create_table(
        "subscription_delivery",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column("sub_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("event_number", sa.BigInteger, nullable=True),
        sa.Column("res_type", sa.String(64), nullable=True),
        sa.Column("res_id", sa.String(64), nullable=True),
        sa.Column("version_id", sa.Integer, nullable=True),
        sa.Column("event_time", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("sent_at", sa.BigInteger, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_subscription_delivery_due", "subscription_delivery", ["state", "next_attempt"])
    op.create_index("ix_subscription_delivery_sub", "subscription_delivery", ["sub_id", "event_number"])


def downgrade() -> None:
    op.drop_table("subscription_delivery")
    op.drop_table("subscription_event")
    op.drop_table("subscription_state")
