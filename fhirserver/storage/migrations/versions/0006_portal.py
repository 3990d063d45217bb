"""Portal: slot bookings (no double booking) and share-link revocations.

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0006
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = ("portal",)
depends_on = None


def upgrade() -> None:
    op.create_table('portal_share_revocation',
    sa.Column('report_id', sa.String(length=64), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('report_id')
    )
    op.create_table('portal_slot_booking',
    sa.Column('slot_id', sa.String(length=64), nullable=False),
    sa.Column('appointment_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('slot_id')
    )


def downgrade() -> None:
    op.drop_table("portal_slot_booking")
    op.drop_table("portal_share_revocation")
