"""The job queue: table `job` (branch "jobs").

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


def downgrade() -> None:
    op.drop_table("job")
