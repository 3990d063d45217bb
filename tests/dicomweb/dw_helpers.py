"""Helpers of the DICOMweb tests: synthetic CT instances as bytes, multipart bodies, parsing."""
from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BOUNDARY = "test-boundary-42"


def ct_bytes(*, patient_id: str = "P1", patient_name: str = "Doe^Jane", study_uid: str | None = None,
             series_uid: str | None = None, number: int = 1, size: int = 64, study_date: str = "20240115",
             accession: str = "", modality: str = "CT", series_number: int = 1,
             sop_uid: str | None = None, window: tuple[float, float] | None = None) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19800203"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "CBCT jaw"
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
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart(parts: list[bytes], boundary: str = BOUNDARY, part_type: str = "application/dicom") -> bytes:
    out = BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(part Content-Type, content) of a multipart answer."""
    from dicom.web.multipart import parse_media_type, parse_multipart

    mt = parse_media_type(content_type)
    assert mt.mime == "multipart/related", content_type
    return [(h.get("content-type", ""), c) for h, c in parse_multipart(body, mt.param("boundary") or "")]


def uid_of(data: bytes) -> str:
    return str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def value(ds_json: dict, tag: str):  # noqa: ANN201
    v = ds_json.get(tag, {}).get("Value")
    return v[0] if v else None
