"""Failed login/token attempts per client address (rate limits).

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0007
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auth_failure',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('endpoint', sa.String(length=20), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_auth_failure_address', 'auth_failure', ['address', 'at'], unique=False)


def downgrade() -> None:
    op.drop_table("auth_failure")
