"""One head: the per-package branches (dicom, smart_auth, lifecycle, portal, load) meet here, so
`fhirserver db upgrade` has a single target and new revisions chain onto this one.

Revision ID: 0009_merge
Revises: 0005, 0006, 0007, 0008_dicom_durable, 0008_load
"""
revision = "0009_merge"
down_revision = ("0005", "0006", "0007", "0008_dicom_durable", "0008_load")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
