"""DICOM durability: the `incomplete` flag of an instance, the queue of ImagingStudy updates and
the erased objects (so that start-up recovery never indexes an erased file again).

Migration 0003 already creates all three (its snapshot was taken after they were added), so only
databases created by an older 0003 get them here: each step checks what is there first. A frozen
snapshot: explicit columns, never the live table objects.

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
    inspector = sa.inspect(op.get_bind())
    if "incomplete" not in {c["name"] for c in inspector.get_columns("dicom_instance")}:
        op.add_column("dicom_instance", sa.Column("incomplete", sa.String(length=200), nullable=True))
    if not inspector.has_table("dicom_bridge_work"):
        op.create_table(
            "dicom_bridge_work",
            sa.Column("study_uid", sa.String(length=64), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("touched", sa.DateTime(timezone=True), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.String(length=500), nullable=True),
            sa.PrimaryKeyConstraint("study_uid"),
        )
    if not inspector.has_table("dicom_erased_object"):
        op.create_table(
            "dicom_erased_object",
            sa.Column("storage_key", sa.String(length=128), nullable=False),
            sa.Column("erased", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("storage_key"),
        )


def downgrade() -> None:
    op.drop_table("dicom_erased_object")
    op.drop_table("dicom_bridge_work")
    with op.batch_alter_table("dicom_instance") as batch:
        batch.drop_column("incomplete")
