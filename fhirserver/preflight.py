"""Checks made before a server process starts serving, so a fault the operator can fix (a port
taken, a data folder or object store that takes no files, a database away or at an unknown schema) ends the
start with one clear line and a non-zero exit instead of a half-working server."""
from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any


def first_line(exc: BaseException) -> str:
    """The gist of an exception on one line (drivers put the useful part first)."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500]


def port_problem(host: str, port: int) -> str | None:
    """None if `host:port` can be bound now, else why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def data_dir_problem(data_dir: Path) -> str | None:
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=data_dir).close()
    except OSError as exc:
        return f"data folder {data_dir} is not writable: {exc.strerror or exc}"
    return None


def blob_store_problem(settings: Any) -> str | None:
    """A `--blob-url` that names no store, or an object store that does not answer or take a
    write: the scans sent to this host would all fail."""
    if not getattr(settings, "blob_url", ""):
        return None
    import subprocess
    import sys

    # in a child interpreter: this process may fork workers next (fhirserver/blobs/probe.py)
    try:
        proc = subprocess.run([sys.executable, "-m", "fhirserver.blobs.probe", settings.blob_url,
                               str(settings.data_dir)], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"blob store {settings.blob_url.split('?')[0]}: no answer within 120 s"
    if proc.returncode != 0:
        why = (proc.stdout.strip() or proc.stderr.strip() or f"probe exited with {proc.returncode}").splitlines()[-1]
        return f"blob store {settings.blob_url.split('?')[0]}: {why[:500]}"
    return None


def dicom_port_problem(settings: Any) -> str | None:
    if not settings.dicom_port:
        return None
    host = settings.dicom_host or settings.host
    why = port_problem(host, settings.dicom_port)
    if why:
        return (f"cannot listen for DICOM on {host}:{settings.dicom_port}: {why} "
                "(choose another --dicom-port, or --dicom-port 0 for no DICOM node)")
    return None


def serve_problem(settings: Any) -> str | None:
    """Data folder, HTTP port, DICOM port (a server without its DICOM node would lose scans)."""
    problem = data_dir_problem(settings.data_dir) or blob_store_problem(settings)
    if problem:
        return problem
    why = port_problem(settings.host, settings.port)
    if why:
        return f"cannot listen for HTTP on {settings.host}:{settings.port}: {why}"
    return dicom_port_problem(settings)


def database_label(url: str) -> str:
    """The URL without its credentials, for messages."""
    return url.split("@")[-1]


def migrate_problem(url: str) -> str | None:
    """Reach the database and bring its schema to this version (None when that worked)."""
    from fhirserver.storage import make_engine, upgrade

    try:
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, unknown revision: one line
        return f"database {database_label(url)}: {first_line(exc)}"
    return None
