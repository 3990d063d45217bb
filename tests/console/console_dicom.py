"""A running DICOM node for the console tests and dcmtk runs as its registered modalities
(CLINIC bound to the demo clinic, HARBOR to Harbor Orthodontics). Adapted from the Clinics
helper of tests/access/test_dicom_access.py (same project)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from live_helpers import free_port, wait_for as live_wait_for  # noqa: F401  (free_port: the console tests' name)

SERVER_AE = "FHIRSERVER"


def ct(*, patient_id: str, patient_name: str = "Doe^Jane", study_uid: str | None = None, accession: str = "",
       number: int = 1, modality: str = "CT") -> Dataset:
    """A small CT slice with real pixel data."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19800203", "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240115", "101500", accession, "1"
    ds.StudyDescription, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CBCT jaw", modality, 1, number
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(number).integers(0, 4096, (16, 16), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def wait_for(fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """`live_helpers.wait_for` with the longer wait of a browser and a DICOM node together."""
    return live_wait_for(fn, timeout)


class Scanners:
    """dcmtk tools run as a registered modality against the node on `port`."""

    def __init__(self, port: int, tmp: Path) -> None:
        self.port, self.tmp, self._n = port, tmp, 0

    def run(self, tool: str, *args: str, aet: str, files: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        if shutil.which(tool) is None:
            pytest.fail(f"dcmtk ({tool}) is not installed (make test installs it)")
        cmd = [tool, "-aet", aet, "-aec", SERVER_AE, *args, "127.0.0.1", str(self.port), *files]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _dir(self, name: str) -> Path:
        self._n += 1
        out = self.tmp / f"{name}-{self._n}"
        out.mkdir(parents=True)
        return out

    def store(self, aet: str, *datasets: Dataset) -> None:
        folder = self._dir("send")
        files = []
        for i, ds in enumerate(datasets):
            path = folder / f"{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(str(path))
        self.run("storescu", aet=aet, files=tuple(files))

    def worklist(self, aet: str) -> list[Dataset]:
        out = self._dir("mwl")
        args = ["-W", "-X", "-od", str(out)]
        for k in ("AccessionNumber", "PatientID", "PatientName", "ScheduledProcedureStepSequence[0].Modality"):
            args += ["-k", k]
        self.run("findscu", *args, aet=aet)
        return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def start_node(app: Any, tmp: Path) -> tuple[Any, Scanners]:
    """The SCP on the app's repository, knowing CLINIC (demo clinic) and HARBOR (Harbor)."""
    from dicom.nodes import add_node
    from dicom.scp import DicomNode

    services = app.extensions["fhirserver"]
    add_node(services.repo.engine, "CLINIC", "127.0.0.1", free_port(), organization="demo-clinic")
    add_node(services.repo.engine, "HARBOR", "127.0.0.1", free_port(), organization="demo-other")
    s = services.settings.replace(dicom_port=free_port(), data_dir=tmp / "var", dicom_ae=SERVER_AE)
    node = DicomNode(s, repo=services.repo)
    node.start()
    return node, Scanners(s.dicom_port, tmp)
