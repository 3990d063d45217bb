"""Current and history tables of resources.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from fhirserver.storage.tables import PK, JsonText

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", JsonText(), nullable=True),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
    )
    op.create_index("ix_resource_type_updated", "resource", ["res_type", "last_updated"])
    op.create_index("ix_resource_type_pk", "resource", ["res_type", "pk"])
    op.create_table(
        "resource_history",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", JsonText(), nullable=True),
        sa.UniqueConstraint("res_type", "res_id", "version_id", name="uq_history_type_id_version"),
    )
    op.create_index("ix_history_updated", "resource_history", ["last_updated"])
    op.create_index("ix_history_type_pk", "resource_history", ["res_type", "pk"])


def downgrade() -> None:
    op.drop_table("resource_history")
    op.drop_table("resource")
