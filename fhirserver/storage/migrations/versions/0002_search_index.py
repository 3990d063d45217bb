"""Search index tables, full-text table and compartment membership.

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idx_date',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.DateTime(timezone=True), nullable=True),
    sa.Column('high', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_date_0', 'idx_date', ['res_type', 'param', 'low', 'high'], unique=False)
    op.create_index('ix_idx_date_pk', 'idx_date', ['res_pk'], unique=False)
    op.create_table('idx_number',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.Numeric(precision=36, scale=18), nullable=True),
    sa.Column('high', sa.Numeric(precision=36, scale=18), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_number_0', 'idx_number', ['res_type', 'param', 'low'], unique=False)
    op.create_index('ix_idx_number_pk', 'idx_number', ['res_pk'], unique=False)
    op.create_table('idx_quantity',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('low', sa.Numeric(precision=36, scale=18), nullable=True),
    sa.Column('high', sa.Numeric(precision=36, scale=18), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_quantity_0', 'idx_quantity', ['res_type', 'param', 'code', 'low'], unique=False)
    op.create_index('ix_idx_quantity_pk', 'idx_quantity', ['res_pk'], unique=False)
    op.create_table('idx_reference',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_reference_0', 'idx_reference', ['res_type', 'param', 'target_id', 'target_type'], unique=False)
    op.create_index('ix_idx_reference_1', 'idx_reference', ['target_type', 'target_id'], unique=False)
    op.create_index('ix_idx_reference_pk', 'idx_reference', ['res_pk'], unique=False)
    op.create_table('idx_string',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('exact', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_string_0', 'idx_string', ['res_type', 'param', 'value'], unique=False)
    op.create_index('ix_idx_string_pk', 'idx_string', ['res_pk'], unique=False)
    op.create_table('idx_text',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('narrative', sa.Text(), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('res_pk')
    )
    op.create_table('idx_token',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('text', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_token_0', 'idx_token', ['res_type', 'param', 'code', 'system'], unique=False)
    op.create_index('ix_idx_token_1', 'idx_token', ['res_type', 'param', 'system'], unique=False)
    op.create_index('ix_idx_token_pk', 'idx_token', ['res_pk'], unique=False)
    op.create_table('idx_uri',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_idx_uri_0', 'idx_uri', ['res_type', 'param'], unique=False)
    op.create_index('ix_idx_uri_pk', 'idx_uri', ['res_pk'], unique=False)
    op.create_table('resource_compartment',
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('comp_type', sa.String(length=64), nullable=False),
    sa.Column('comp_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    op.create_index('ix_resource_compartment_owner', 'resource_compartment', ['comp_type', 'comp_id', 'res_pk'], unique=False)
    op.create_index('ix_resource_compartment_pk', 'resource_compartment', ['res_pk'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_string_trgm ON idx_string USING gin (value gin_trgm_ops)")
        # prefix LIKE 'abc%' uses a B-tree only with pattern ops under a non-C collation
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_string_prefix ON idx_string "
                   "(res_type, param, value varchar_pattern_ops)")
        op.execute("CREATE INDEX IF NOT EXISTS ix_idx_uri_prefix ON idx_uri (res_type, param, uri text_pattern_ops)")


def downgrade() -> None:
    op.drop_table("resource_compartment")
    op.drop_table("idx_uri")
    op.drop_table("idx_token")
    op.drop_table("idx_text")
    op.drop_table("idx_string")
    op.drop_table("idx_reference")
    op.drop_table("idx_quantity")
    op.drop_table("idx_number")
    op.drop_table("idx_date")
