"""The job queue (table `job`) and bulk exports (table `bulk_export`) (branch "jobs").

Revision ID: 0010_jobs
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_jobs"
down_revision = "0002"
branch_labels = ("jobs",)
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("run_at", sa.BigInteger, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("dedupe_key", sa.String(300), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("finished", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_job_due", "job", ["state", "run_at"])
    op.create_index("ix_job_kind", "job", ["kind", "state"])
    op.create_index("ux_job_dedupe_queued", "job", ["dedupe_key"], unique=True,
                    sqlite_where=sa.text("state = 'queued'"), postgresql_where=sa.text("state = 'queued'"))
    op.create_table(
        "bulk_export",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(400), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_pk", sa.BigInteger, nullable=True),
        sa.Column("transaction_time", sa.String(40), nullable=True),
        sa.Column("progress", sa.String(300), nullable=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error_text", sa.Text, nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_bulk_export_expires", "bulk_export", ["expires"])


def downgrade() -> None:
    op.drop_table("bulk_export")
    op.drop_table("job")
