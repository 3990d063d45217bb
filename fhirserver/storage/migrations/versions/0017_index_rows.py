"""Search index rows without a foreign key to `resource` (branch "search").

The index tables (`idx_*`, `idx_text`, `resource_compartment`) hold rows derived from the
current version of a resource: the repository deletes and writes them itself on every write,
and erasure deletes them before the resource row. Their `res_pk` foreign key (ON DELETE
CASCADE) added nothing to that, but PostgreSQL ran its check, one lookup of `resource` per
inserted row, for every index row: about a third of the database's cost of writing an
AuditEvent (21 index rows) and a large share of every create, update and bulk load.

Revision ID: 0017_index_rows
Revises: 0016_search
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_index_rows"
down_revision = "0016_search"
branch_labels = None
depends_on = None

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri",
          "idx_text", "resource_compartment")
# SQLite's foreign keys have no name: batch mode names them by this convention to drop them
_SQLITE_FK = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_res_pk_fkey")
        return
    inspector = sa.inspect(bind)
    for table in TABLES:
        # unnamed as 0002 made them, or named as this revision's downgrade does
        names = [fk["name"] or f"fk_{table}_res_pk_resource" for fk in inspector.get_foreign_keys(table)
                 if fk["referred_table"] == "resource"]
        if not names:
            continue
        with op.batch_alter_table(table, naming_convention=_SQLITE_FK) as batch:
            for name in names:
                batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f"{table}_res_pk_fkey", "resource", ["res_pk"], ["pk"], ondelete="CASCADE")
