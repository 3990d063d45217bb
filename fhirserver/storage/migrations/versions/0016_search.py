"""Date search on a range index: a GiST index over the span [low, high) of each `idx_date` row
(PostgreSQL only), so `birthdate=ge1980-03-01&birthdate=lt1980-03-08` is one index range lookup
estimated from range statistics instead of two half-table scans (branch "search").

The indexed expression is `fhirserver.search.planner.SPAN_SQL`; queries repeat it verbatim.
`btree_gist` lets the GiST index lead with (res_type, param).

Revision ID: 0016_search
Revises: 0011_subscriptions
"""
from alembic import op

revision = "0016_search"
down_revision = "0011_subscriptions"
branch_labels = None
depends_on = None

SPAN = "(CASE WHEN low > high THEN 'empty'::tstzrange ELSE tstzrange(low, high, '[)') END)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute(f"CREATE INDEX IF NOT EXISTS ix_idx_date_span ON idx_date USING gist (res_type, param, {SPAN})")
    op.execute("ANALYZE idx_date")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_idx_date_span")
