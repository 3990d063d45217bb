"""Helpers shared by the DICOM, DICOMweb and subscription tests: a synthetic CT slice (real pixel
data), its Part 10 file, and a running DICOM node (in-process SCP) on the test database. One copy
instead of one per test folder; a uniquely named module on the test path (the test folders are
not packages). The fixtures are used by importing them into a conftest or test module."""
from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import delete

from dicom.nodes import add_node
from dicom.scp import DicomNode
from dicom.tables import DICOM_TABLES
from live_helpers import free_port

SCU_AE = "TESTSCU"


def ct_dataset(*, patient_id: str = "P1", patient_name: str = "Doe^Jane", study_uid: str | None = None,
               series_uid: str | None = None, number: int = 1, size: int = 64, accession: str = "",
               study_date: str = "20240115", study_time: str = "101500", modality: str = "CT",
               series_number: int = 1, sop_uid: str | None = None, birth_date: str = "19800203",
               sex: str = "F", description: str = "CBCT jaw") -> Dataset:
    """A CT slice of `size` x `size` 12-bit pixels (random, seeded by `number`): the attributes
    a modality sends and the archive indexes. Its file meta is set by `save_part10`."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = description
    ds.ReferringPhysicianName = "Smith^Anna"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "axial"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    return ds


def save_part10(ds: Dataset, target: str | Path | IO[bytes], transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Write `ds` as a DICOM Part 10 file (the form modalities send and C-STORE carries)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(target, enforce_file_format=True)


@pytest.fixture()
def clean_dicom(repo: Any) -> Any:
    """The test repository with no DICOM rows left by an earlier test."""
    with repo.engine.begin() as conn:
        for table in reversed(DICOM_TABLES):
            conn.execute(delete(table))
    return repo


def start_node(settings: Any, repo: Any, tmp_path: Path, **changes: Any) -> DicomNode:
    """A started SCP (AE FHIRSERVER) on a free port with its own data folder, that knows the caller
    TESTSCU (`changes`: further settings of the node)."""
    s = settings.replace(dicom_port=free_port(), data_dir=tmp_path / "var", dicom_ae="FHIRSERVER", **changes)
    n = DicomNode(s, repo=repo)
    add_node(repo.engine, SCU_AE, "127.0.0.1", 104, description="test SCU")
    n.start()
    return n


@pytest.fixture()
def node(settings: Any, clean_dicom: Any, tmp_path: Path) -> Iterator[DicomNode]:
    """A running SCP (AE FHIRSERVER) that knows the caller TESTSCU."""
    n = start_node(settings, clean_dicom, tmp_path)
    yield n
    n.stop()
