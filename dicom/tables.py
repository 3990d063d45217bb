"""The DICOM index: studies, series and instances received by the node, and the AE registry.

Declared on the core's MetaData so Alembic (migration 0003, branch "dicom") and test cleanup see
them. No foreign keys to `resource`: the FHIR side is referenced by id only (the ImagingStudy may
be deleted or merged independently of the stored instances).
"""
from __future__ import annotations

from sqlalchemy import (
    Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint,
)

from fhirserver.storage import PK, metadata

dicom_study = Table(
    "dicom_study", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("issuer", String(64), nullable=True),
    Column("patient_name", String(200), nullable=True),
    Column("birth_date", String(16), nullable=True),
    Column("sex", String(16), nullable=True),
    Column("study_date", String(16), nullable=True),
    Column("study_time", String(32), nullable=True),
    Column("accession", String(64), nullable=True),
    Column("study_id", String(32), nullable=True),
    Column("description", String(200), nullable=True),
    Column("referring_physician", String(200), nullable=True),
    Column("modalities", String(200), nullable=True),    # backslash-joined, sorted
    Column("sop_classes", Text, nullable=True),         # backslash-joined, sorted
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("imaging_study_id", String(64), nullable=True),
    Column("patient_res_id", String(64), nullable=True),
    Column("updated", DateTime(timezone=True), nullable=True),
    UniqueConstraint("study_uid", name="uq_dicom_study_uid"),
    Index("ix_dicom_study_patient", "patient_id", "issuer"),
    Index("ix_dicom_study_accession", "accession"),
    Index("ix_dicom_study_date", "study_date"),
)

dicom_series = Table(
    "dicom_series", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("description", String(200), nullable=True),
    Column("body_part", String(64), nullable=True),
    Column("series_date", String(16), nullable=True),
    Column("series_time", String(32), nullable=True),
    UniqueConstraint("series_uid", name="uq_dicom_series_uid"),
    Index("ix_dicom_series_study", "study_uid"),
)

dicom_instance = Table(
    "dicom_instance", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("sop_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("number_of_frames", Integer, nullable=True),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("transfer_syntax", String(64), nullable=False),
    Column("storage_key", String(128), nullable=False),
    Column("size", Integer, nullable=False),
    Column("received", DateTime(timezone=True), nullable=False),
    Column("source_ae", String(16), nullable=True),
    # why the instance is not whole (pixel data cut short or missing); NULL: complete. Kept as
    # received, answered with a warning, shown on the ImagingStudy (migration 0008)
    Column("incomplete", String(200), nullable=True),
    UniqueConstraint("sop_uid", name="uq_dicom_instance_sop"),
    Index("ix_dicom_instance_series", "series_uid"),
    Index("ix_dicom_instance_study", "study_uid"),
)

dicom_node = Table(
    "dicom_node", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("ae_title", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("organization", String(64), nullable=True),   # Organization id
    Column("description", String(200), nullable=True),
    UniqueConstraint("ae_title", name="uq_dicom_node_ae"),
)

# The ImagingStudy updates still to do: one row per study, written in the same transaction as
# the instance rows that make it due, deleted once the ImagingStudy reflects them (`seq` changes
# with every new instance, so an update that raced with a newer instance leaves the row behind).
# Rows survive a crash and are done at the next start (migration 0008).
dicom_bridge_work = Table(
    "dicom_bridge_work", metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("seq", Integer, nullable=False, default=1),
    Column("touched", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(500), nullable=True),
)

# Stored objects whose instances were erased ($erase): the file is deleted after the commit, and
# a crash in between must not let start-up recovery index the file again (migration 0008).
dicom_erased_object = Table(
    "dicom_erased_object", metadata,
    Column("storage_key", String(128), primary_key=True),
    Column("erased", DateTime(timezone=True), nullable=False),
)

DICOM_TABLES = (dicom_study, dicom_series, dicom_instance, dicom_node, dicom_bridge_work,
                dicom_erased_object)
