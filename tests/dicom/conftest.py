"""Fixtures of the DICOM tests: a node (in-process SCP) on a free port against the test
database, with its own data folder, and helpers to run dcmtk tools against it."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from dicom.scp import DicomNode
from dicom_helpers import SCU_AE, clean_dicom, node  # noqa: F401 - fixtures, and a name the tests import
from live_helpers import free_port, wait_for  # noqa: F401 - the tests import them from here


def need_dcmtk() -> None:
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed (make test installs it: apt-get install -y dcmtk)")


class Dcmtk:
    def __init__(self, node: DicomNode) -> None:
        self.node = node

    def run(self, tool: str, *args: str, aet: str = SCU_AE, check: bool = True,
            timeout: float = 120, files: list[str] | tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        need_dcmtk()
        cmd = [tool, "-aet", aet, "-aec", self.node.settings.dicom_ae, *args,
               "127.0.0.1", str(self.node.settings.dicom_port), *map(str, files)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture()
def dcmtk(node):  # noqa: ANN001, ANN201
    return Dcmtk(node)

