"""Portal: slot bookings (no double booking) and share-link revocations.

Revision ID: 0006
Revises: 0002
"""
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = ("portal",)
depends_on = None


def _tables():  # noqa: ANN202
    from portal.tables import PORTAL_TABLES

    return PORTAL_TABLES


def upgrade() -> None:
    bind = op.get_bind()
    for table in _tables():
        table.create(bind)


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
