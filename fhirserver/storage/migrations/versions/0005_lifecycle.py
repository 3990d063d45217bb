"""Patients' lifecycle: invitations, accounts, reserved emails, access requests, email outbox.

Revision ID: 0005
Revises: 0002
"""
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = ("lifecycle",)
depends_on = None


def _tables():  # noqa: ANN202
    from fhirserver.notify.tables import NOTIFY_TABLES
    from fhirserver.access.tables import LIFECYCLE_TABLES

    return LIFECYCLE_TABLES + NOTIFY_TABLES


def upgrade() -> None:
    bind = op.get_bind()
    for table in _tables():
        table.create(bind)


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
