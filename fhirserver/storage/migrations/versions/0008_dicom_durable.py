"""DICOM durability: the `incomplete` flag of an instance, the queue of ImagingStudy updates and
the erased objects (so that start-up recovery never indexes an erased file again).

Migration 0003 creates the DICOM tables as `dicom.tables` declares them today, so a database
created after this change already has both; only older databases get them here.

Revision ID: 0008_dicom_durable
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_dicom_durable"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from dicom.tables import dicom_bridge_work, dicom_erased_object

    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "incomplete" not in {c["name"] for c in inspector.get_columns("dicom_instance")}:
        op.add_column("dicom_instance", sa.Column("incomplete", sa.String(200), nullable=True))
    for table in (dicom_bridge_work, dicom_erased_object):
        if not inspector.has_table(table.name):
            table.create(bind)


def downgrade() -> None:
    op.drop_table("dicom_erased_object")
    op.drop_table("dicom_bridge_work")
    with op.batch_alter_table("dicom_instance") as batch:
        batch.drop_column("incomplete")
