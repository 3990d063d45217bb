"""Synthetic DICOM instances made with pydicom (CT slices with real pixel data)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid


def make_ct(path: Path, *, patient_id: str = "P1", patient_name: str = "Doe^Jane",
            study_uid: str | None = None, series_uid: str | None = None, number: int = 1,
            size: int = 64, accession: str = "", study_date: str = "20240115",
            study_time: str = "101500", modality: str = "CT", series_number: int = 1,
            issuer: str | None = None, implicit: bool = False, sop_uid: str | None = None,
            birth_date: str = "19800203", sex: str = "F", description: str = "CBCT jaw") -> Path:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.SeriesDate = study_date
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = description
    ds.ReferringPhysicianName = "Smith^Anna"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "axial"
    ds.BodyPartExamined = "JAW"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelSpacing = [0.3, 0.3]
    ds.SliceThickness = 0.3
    ds.ImagePositionPatient = [0, 0, number * 0.3]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def make_series(folder: Path, n: int, **kwargs) -> tuple[str, str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    series_uid = kwargs.pop("series_uid", None) or generate_uid()
    paths = [make_ct(folder / f"ct{i:04d}.dcm", study_uid=study_uid, series_uid=series_uid,
                     number=i + 1, **kwargs) for i in range(n)]
    return study_uid, series_uid, paths
