"""Current and history tables of resources.

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# resource JSON: `json` on PostgreSQL (stored verbatim), TEXT elsewhere
JSON_TEXT = sa.Text().with_variant(postgresql.JSON(), "postgresql")


def upgrade() -> None:
    op.create_table('resource',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('body', JSON_TEXT, nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('res_type', 'res_id', name='uq_resource_type_id')
    )
    op.create_index('ix_resource_type_pk', 'resource', ['res_type', 'pk'], unique=False)
    op.create_index('ix_resource_type_updated', 'resource', ['res_type', 'last_updated'], unique=False)
    op.create_table('resource_history',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('body', JSON_TEXT, nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('res_type', 'res_id', 'version_id', name='uq_history_type_id_version')
    )
    op.create_index('ix_history_type_pk', 'resource_history', ['res_type', 'pk'], unique=False)
    op.create_index('ix_history_updated', 'resource_history', ['last_updated'], unique=False)


def downgrade() -> None:
    op.drop_table("resource_history")
    op.drop_table("resource")
