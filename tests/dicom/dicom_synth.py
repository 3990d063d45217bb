"""Synthetic DICOM instances made with pydicom (CT slices with real pixel data), as files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicom_helpers import ct_dataset, save_part10


def make_ct(path: Path, *, number: int = 1, study_date: str = "20240115", issuer: str | None = None,
            implicit: bool = False, **attrs: Any) -> Path:
    """A CT slice of an axial series at `path`, with the geometry a viewer stacks slices by
    (`attrs`: those `ct_dataset` takes)."""
    ds = ct_dataset(number=number, study_date=study_date, **attrs)
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.SeriesDate = study_date
    ds.BodyPartExamined = "JAW"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.3, 0.3]
    ds.SliceThickness = 0.3
    ds.ImagePositionPatient = [0, 0, number * 0.3]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    save_part10(ds, path, ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    return path


def make_series(folder: Path, n: int, **kwargs) -> tuple[str, str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    series_uid = kwargs.pop("series_uid", None) or generate_uid()
    paths = [make_ct(folder / f"ct{i:04d}.dcm", study_uid=study_uid, series_uid=series_uid,
                     number=i + 1, **kwargs) for i in range(n)]
    return study_uid, series_uid, paths
