"""Fixtures of the DICOM tests: a node (in-process SCP) on a free port against the test
database, with its own data folder, and helpers to run dcmtk tools against it."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import delete

from dicom.nodes import add_node
from dicom.scp import DicomNode
from dicom.tables import DICOM_TABLES

SCU_AE = "TESTSCU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_dcmtk() -> None:
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed (make test installs it: apt-get install -y dcmtk)")


@pytest.fixture()
def clean_dicom(repo):  # noqa: ANN001, ANN201
    with repo.engine.begin() as conn:
        for table in reversed(DICOM_TABLES):
            conn.execute(delete(table))
    return repo


@pytest.fixture()
def node(settings, clean_dicom, tmp_path):  # noqa: ANN001, ANN201
    """A running SCP (AE FHIRSERVER) that knows the caller TESTSCU."""
    s = settings.replace(dicom_port=free_port(), data_dir=tmp_path / "var", dicom_ae="FHIRSERVER")
    n = DicomNode(s, repo=clean_dicom)
    add_node(clean_dicom.engine, SCU_AE, "127.0.0.1", 104, description="test SCU")
    n.start()
    yield n
    n.stop()


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


def wait_for(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
