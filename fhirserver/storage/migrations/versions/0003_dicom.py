"""DICOM node index: studies, series, instances and the AE registry (branch "dicom"), with the
durability tables of 0008_dicom_durable (this revision has created them since they were added).

A frozen snapshot (alembic autogenerate against an empty database, reviewed): the schema this
revision creates never follows later edits of the tables in the code.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = ("dicom",)
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_bridge_work',
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('touched', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('study_uid')
    )
    op.create_table('dicom_erased_object',
    sa.Column('storage_key', sa.String(length=128), nullable=False),
    sa.Column('erased', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('storage_key')
    )
    op.create_table('dicom_instance',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=128), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('received', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source_ae', sa.String(length=16), nullable=True),
    sa.Column('incomplete', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('sop_uid', name='uq_dicom_instance_sop')
    )
    op.create_index('ix_dicom_instance_series', 'dicom_instance', ['series_uid'], unique=False)
    op.create_index('ix_dicom_instance_study', 'dicom_instance', ['study_uid'], unique=False)
    op.create_table('dicom_node',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('organization', sa.String(length=64), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('ae_title', name='uq_dicom_node_ae')
    )
    op.create_table('dicom_series',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.Column('body_part', sa.String(length=64), nullable=True),
    sa.Column('series_date', sa.String(length=16), nullable=True),
    sa.Column('series_time', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('series_uid', name='uq_dicom_series_uid')
    )
    op.create_index('ix_dicom_series_study', 'dicom_series', ['study_uid'], unique=False)
    op.create_table('dicom_study',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('issuer', sa.String(length=64), nullable=True),
    sa.Column('patient_name', sa.String(length=200), nullable=True),
    sa.Column('birth_date', sa.String(length=16), nullable=True),
    sa.Column('sex', sa.String(length=16), nullable=True),
    sa.Column('study_date', sa.String(length=16), nullable=True),
    sa.Column('study_time', sa.String(length=32), nullable=True),
    sa.Column('accession', sa.String(length=64), nullable=True),
    sa.Column('study_id', sa.String(length=32), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.Column('referring_physician', sa.String(length=200), nullable=True),
    sa.Column('modalities', sa.String(length=200), nullable=True),
    sa.Column('sop_classes', sa.Text(), nullable=True),
    sa.Column('num_series', sa.Integer(), nullable=False),
    sa.Column('num_instances', sa.Integer(), nullable=False),
    sa.Column('imaging_study_id', sa.String(length=64), nullable=True),
    sa.Column('patient_res_id', sa.String(length=64), nullable=True),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('study_uid', name='uq_dicom_study_uid')
    )
    op.create_index('ix_dicom_study_accession', 'dicom_study', ['accession'], unique=False)
    op.create_index('ix_dicom_study_date', 'dicom_study', ['study_date'], unique=False)
    op.create_index('ix_dicom_study_patient', 'dicom_study', ['patient_id', 'issuer'], unique=False)


def downgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for name in ("dicom_study", "dicom_series", "dicom_node", "dicom_instance", "dicom_erased_object",
                 "dicom_bridge_work"):
        if inspector.has_table(name):  # 0008's tables are gone already when it ran first
            op.drop_table(name)
