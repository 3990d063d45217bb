"""Loading: committed Bundle batch ids (at-most-once Bundles) and the loader's journal (branch "load").

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0008_load
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_load"
down_revision = "0002"
branch_labels = ("load",)
depends_on = None


def upgrade() -> None:
    op.create_table('committed_batch',
    sa.Column('batch_key', sa.String(length=200), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('batch_key')
    )
    op.create_table('load_journal',
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('file_sha', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=True),
    sa.Column('inflight', sa.Text(), nullable=True),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('retry', sa.Text(), nullable=True),
    sa.Column('resources', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('target', 'file_sha', name='pk_load_journal')
    )


def downgrade() -> None:
    op.drop_table("load_journal")
    op.drop_table("committed_batch")
