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

    import sqlalchemy as sa

    inspector = sa.inspect(op.get_bind())
    for table in reversed(DICOM_TABLES):  # 0008's tables are gone already when it ran first
        if inspector.has_table(table.name):
            op.drop_table(table.name)
