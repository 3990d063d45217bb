"""Failed login/token attempts per client address (rate limits).

Revision ID: 0007
Revises: 0004
"""
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from smart_auth.ratelimit import auth_failure

    auth_failure.create(op.get_bind())


def downgrade() -> None:
    op.drop_table("auth_failure")
