"""The `cluster` fixture: one multi-host cluster per blob store variant (multihost_cluster)."""
from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

import multihost_harness as mh
from multihost_cluster import BIN, Cluster, blob_url_supported, start_cluster


@pytest.fixture(scope="module", params=["local", "s3"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    why = mh.unavailable() or mh.pg_unavailable()
    if why:
        pytest.skip(why)
    if os.environ.get("FHIRSERVER_TEST_DATABASE_URL"):
        pytest.skip("the multi-host test brings its own PostgreSQL cluster: it runs in the SQLite pass")
    for tool in ("haproxy", "storescu", "psql", "runuser"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs haproxy and dcmtk)")
    if request.param == "s3":
        if not blob_url_supported():
            pytest.skip("this server has no S3-compatible blob store (Settings has no blob_url / "
                        "FHIRSERVER_BLOB_URL)")
        if not (BIN / "moto_server").exists():
            pytest.skip("moto_server is not installed (pip install -e '.[test]')")
    workdir = mh.workdir_for(request.param)
    try:
        yield from start_cluster(request.param, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
