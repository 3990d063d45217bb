"""SMART on FHIR authorization server: clients, users, tokens, codes, launches, keys.

Revision ID: 0004
Revises: 0002
"""
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = ("smart_auth",)
depends_on = None


def upgrade() -> None:
    from smart_auth.tables import SMART_TABLES

    bind = op.get_bind()
    for table in SMART_TABLES:
        table.create(bind)


def downgrade() -> None:
    from smart_auth.tables import SMART_TABLES

    for table in reversed(SMART_TABLES):
        op.drop_table(table.name)
