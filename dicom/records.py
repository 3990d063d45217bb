"""The imaging port of patient-wide operations (`fhirserver.operations.ports.Imaging`).

Erasing or merging a patient reaches the DICOM index and the stored instances: the operation
calls these methods in its own transaction, and only this package writes its tables.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update

from dicom.index import record_erased
from fhirserver.blobs import BlobStore
from dicom.tables import dicom_instance, dicom_series, dicom_study


class ImagingRecords:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def erase_patient(self, conn: Any, patient_id: str, imaging_study_ids: list[str]) -> list[str]:
        """Index rows of the patient's studies go; the storage keys of their files no one else uses."""
        studies = conn.execute(select(dicom_study.c.study_uid).where(or_(
            dicom_study.c.patient_res_id == patient_id,
            dicom_study.c.imaging_study_id.in_(imaging_study_ids) if imaging_study_ids else False))).scalars().all()
        if not studies:
            return []
        keys = list(conn.execute(select(dicom_instance.c.storage_key).where(
            dicom_instance.c.study_uid.in_(studies))).scalars())
        conn.execute(delete(dicom_instance).where(dicom_instance.c.study_uid.in_(studies)))
        conn.execute(delete(dicom_series).where(dicom_series.c.study_uid.in_(studies)))
        conn.execute(delete(dicom_study).where(dicom_study.c.study_uid.in_(studies)))
        still = set(conn.execute(select(dicom_instance.c.storage_key).where(
            dicom_instance.c.storage_key.in_(keys))).scalars()) if keys else set()
        keys = [k for k in keys if k not in still]
        record_erased(conn, keys)  # a crash before the files go must not bring them back
        return keys

    def delete_files(self, keys: list[str]) -> None:
        for k in keys:
            self.store.delete(k)

    def move_studies(self, conn: Any, source: str, target: str, imaging_study_ids: list[str]) -> None:
        # studies not yet linked to an ImagingStudy follow the patient too
        conn.execute(update(dicom_study).where(
            dicom_study.c.patient_res_id == source,
            or_(dicom_study.c.imaging_study_id.is_(None), dicom_study.c.imaging_study_id.in_(imaging_study_ids)))
            .values(patient_res_id=target))


__all__ = ["ImagingRecords"]
