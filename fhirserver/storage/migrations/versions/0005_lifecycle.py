"""Patients' lifecycle: invitations, accounts, reserved emails, access requests, email outbox.

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0005
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = ("lifecycle",)
depends_on = None


def upgrade() -> None:
    op.create_table('lifecycle_access_request',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('organization', sa.String(length=64), nullable=False),
    sa.Column('requested_by', sa.String(length=140), nullable=True),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_lifecycle_access_request_patient', 'lifecycle_access_request', ['patient_id'], unique=False)
    op.create_table('lifecycle_account',
    sa.Column('user_pk', sa.BigInteger(), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('mobile', sa.String(length=40), nullable=True),
    sa.Column('security_question', sa.Text(), nullable=True),
    sa.Column('security_answer_hash', sa.Text(), nullable=True),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('activated', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('user_pk')
    )
    op.create_index('ix_lifecycle_account_res', 'lifecycle_account', ['res_type', 'res_id'], unique=False)
    op.create_table('lifecycle_email',
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('email')
    )
    op.create_table('lifecycle_invitation',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('user_pk', sa.BigInteger(), nullable=False),
    sa.Column('invited_by', sa.String(length=140), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('used', sa.Boolean(), nullable=False),
    sa.Column('superseded', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index('ix_lifecycle_invitation_res', 'lifecycle_invitation', ['res_type', 'res_id'], unique=False)
    op.create_table('notify_outbox',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('sent', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_notify_outbox_patient', 'notify_outbox', ['patient_id'], unique=False)


def downgrade() -> None:
    op.drop_table("notify_outbox")
    op.drop_table("lifecycle_invitation")
    op.drop_table("lifecycle_email")
    op.drop_table("lifecycle_account")
    op.drop_table("lifecycle_access_request")
