"""Search index tables, full-text table and compartment membership.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

from fhirserver.storage.tables import INDEX_TABLES

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in INDEX_TABLES:
        table.create(bind)  # tables and their indexes, as declared in storage.tables
    if bind.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_string_trgm ON idx_string USING gin (value gin_trgm_ops)")
        # prefix LIKE 'abc%' uses a B-tree only with pattern ops under a non-C collation
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_string_prefix ON idx_string "
                   "(res_type, param, value varchar_pattern_ops)")
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_uri_prefix ON idx_uri (res_type, param, uri text_pattern_ops)")


def downgrade() -> None:
    for table in reversed(INDEX_TABLES):
        op.drop_table(table.name)
