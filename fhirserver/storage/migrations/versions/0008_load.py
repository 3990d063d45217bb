"""Loading: committed Bundle batch ids (at-most-once Bundles) and the loader's journal (branch "load").

Revision ID: 0008_load
Revises: 0002
"""
from alembic import op

revision = "0008_load"
down_revision = "0002"
branch_labels = ("load",)
depends_on = None


def _tables():  # noqa: ANN202
    from fhirserver.load.journal import JOURNAL_TABLES
    from fhirserver.storage.batches import BATCH_TABLES

    return BATCH_TABLES + JOURNAL_TABLES


def upgrade() -> None:
    bind = op.get_bind()
    for table in _tables():
        table.create(bind)


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
