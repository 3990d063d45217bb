"""`serve` and `dicom` refuse to start half-working: a port that cannot be bound, a database that
cannot be reached or migrated, a data folder that takes no files each end the start with one
clear line on stderr and a non-zero exit (run as the operator runs them: a subprocess)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from fhirserver.storage import make_engine, upgrade
from tests.conftest import free_port


def _start(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fhirserver.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fhirserver: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def taken_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_http_port_taken(taken_port, database_url, tmp_path):  # noqa: ANN001
    proc = _start("serve", "--port", str(taken_port), "--dicom-port", "0", "--insecure-no-auth",
                  "--data-dir", str(tmp_path), "--database-url", database_url)
    _one_clear_line(proc, f"cannot listen for HTTP on 127.0.0.1:{taken_port}")


def test_serve_dicom_port_taken(taken_port, database_url, tmp_path):  # noqa: ANN001
    proc = _start("serve", "--port", str(free_port()), "--dicom-port", str(taken_port), "--insecure-no-auth",
                  "--data-dir", str(tmp_path), "--database-url", database_url)
    _one_clear_line(proc, f"cannot listen for DICOM on 127.0.0.1:{taken_port}")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_dicom_node_port_taken(taken_port, database_url, tmp_path, processes):  # noqa: ANN001
    proc = _start("dicom", "--dicom-port", str(taken_port), "--processes", processes,
                  "--data-dir", str(tmp_path), "--database-url", database_url)
    _one_clear_line(proc, f"cannot listen for DICOM on 127.0.0.1:{taken_port}")


def test_serve_data_folder_not_writable(database_url, tmp_path):  # noqa: ANN001
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the data folder should be")  # root writes anywhere else
    proc = _start("serve", "--port", str(free_port()), "--dicom-port", "0", "--insecure-no-auth",
                  "--data-dir", str(blocker / "var"), "--database-url", database_url)
    _one_clear_line(proc, "data folder", "not writable")


def test_serve_database_unreachable(tmp_path):  # noqa: ANN001
    closed = free_port()
    proc = _start("serve", "--port", str(free_port()), "--dicom-port", "0", "--insecure-no-auth",
                  "--data-dir", str(tmp_path), "--database-url", f"postgresql://postgres:pw@127.0.0.1:{closed}/none")
    _one_clear_line(proc, "database", f"127.0.0.1:{closed}")
    assert "pw@" not in proc.stderr  # no credentials in the message


def test_serve_database_that_cannot_be_migrated(tmp_path):  # noqa: ANN001
    """A database a newer version already migrated (a revision this code does not know)."""
    url = f"sqlite:///{tmp_path / 'newer.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future' "
                       "WHERE version_num = '0002' OR version_num = (SELECT MIN(version_num) FROM alembic_version)"))
    engine.dispose()
    proc = _start("serve", "--port", str(free_port()), "--dicom-port", "0", "--insecure-no-auth",
                  "--data-dir", str(tmp_path), "--database-url", url)
    _one_clear_line(proc, "database", "9999_from_the_future")
    proc = _start("db", "upgrade", "--database-url", url)
    _one_clear_line(proc, "9999_from_the_future")


def test_serve_bad_log_level_is_refused(tmp_path):  # noqa: ANN001
    proc = _start("serve", "--log-level", "chatty", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "--log-level" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["serve", "dicom"])
def test_object_store_away_or_misnamed(command, database_url, tmp_path, moto_s3):  # noqa: ANN001
    """A `--blob-url` whose store does not answer (or is no blob URL) ends the start: every scan
    sent to this host would fail."""
    ports = ["--port", str(free_port())] if command == "serve" else []
    ports += ["--dicom-port", str(free_port())]
    extra = ["--insecure-no-auth"] if command == "serve" else ["--processes", "1"]
    away = f"s3://nobucket/p?endpoint=http://127.0.0.1:{free_port()}"
    proc = _start(command, *ports, *extra, "--data-dir", str(tmp_path), "--database-url", database_url,
                  "--blob-url", away)
    _one_clear_line(proc, "blob store s3://nobucket/p")
    proc = _start(command, *ports, *extra, "--data-dir", str(tmp_path), "--database-url", database_url,
                  "--blob-url", "ftp://host/x")
    _one_clear_line(proc, "blob store ftp://host/x")
