"""DICOM node index: studies, series, instances and the AE registry (branch "dicom").

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = ("dicom",)
depends_on = None


def upgrade() -> None:
    from dicom.tables import DICOM_TABLES

    bind = op.get_bind()
    for table in DICOM_TABLES:
        table.create(bind)  # table and its indexes, as declared in dicom.tables


def downgrade() -> None:
    from dicom.tables import DICOM_TABLES

    for table in reversed(DICOM_TABLES):
        op.drop_table(table.name)
