"""The migrations are the schema: a database built from them equals the models (alembic's
`compare_metadata`, no differences) on SQLite and PostgreSQL, `fhirserver db upgrade` is
idempotent with one head, and the revisions are frozen `op.*` snapshots."""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from fhirserver.storage.migrate import current_heads, script_heads, upgrade
from fhirserver.storage.tables import metadata

VERSIONS = Path(__file__).resolve().parents[2] / "fhirserver/storage/migrations/versions"
PACKAGES = ("fhirserver", "dicom", "smart_auth", "portal", "console")
# made by raw SQL in 0002 and 0016 (operator classes, GiST ranges: PostgreSQL only), not in the models
PG_ONLY_INDEXES = {"ix_idx_string_trgm", "ix_idx_string_prefix", "ix_idx_uri_prefix", "ix_idx_date_span"}


def _all_models() -> None:
    """Import every module of the packages: each table registers itself on the one metadata,
    so a table added anywhere is compared without listing it here."""
    for name in PACKAGES:
        try:
            pkg = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for info in pkgutil.walk_packages(pkg.__path__, name + "."):
            if ".migrations" not in info.name:
                importlib.import_module(info.name)


@pytest.fixture()
def fresh_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of the suite's kind (its own PostgreSQL database when testing on PG)."""
    pg = os.environ.get("FHIRSERVER_TEST_DATABASE_URL")
    if not pg:
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    head, _, dbname = pg.rpartition("/")
    name = f"{dbname.split('?')[0]}_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(head.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{head}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _db_upgrade(url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=url, FHIRSERVER_DATA_DIR=str(tmp_path / "var"))
    return subprocess.run([sys.executable, "-m", "fhirserver.cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=300)


def _engine(url: str):  # noqa: ANN202
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def test_one_head() -> None:
    assert len(script_heads()) == 1, f"several heads: {script_heads()}; chain new revisions onto the head"


def test_db_upgrade_twice_exits_0(fresh_url: str, tmp_path: Path) -> None:
    for _ in range(2):
        done = _db_upgrade(fresh_url, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
        assert f"schema revision: {script_heads()[0]} " in done.stdout


def _diffs(url: str) -> list:
    """What alembic's autogenerate would change to make the database equal the models."""
    _all_models()
    engine = _engine(url)

    def include(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN202
        if type_ == "table" and name == "alembic_version":
            return False
        return not (type_ == "index" and name in PG_ONLY_INDEXES)

    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def test_migrated_database_equals_models(fresh_url: str, tmp_path: Path) -> None:
    done = _db_upgrade(fresh_url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert _diffs(fresh_url) == []


def test_database_of_the_branch_heads_upgrades_to_the_one_head(fresh_url: str, tmp_path: Path) -> None:
    """A database made before the branches met (at their five heads, tables as the models made
    them) takes the merge revision and still equals the models."""
    engine = _engine(fresh_url)
    try:
        upgrade(engine, "0005")
        for head in ("0006", "0007", "0008_dicom_durable", "0008_load"):
            upgrade(engine, head)
        assert current_heads(engine) == ("0005", "0006", "0007", "0008_dicom_durable", "0008_load")
    finally:
        engine.dispose()
    done = _db_upgrade(fresh_url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"schema revision: {script_heads()[0]} (up to date)" in done.stdout
    assert _diffs(fresh_url) == []


def test_revisions_are_frozen_snapshots() -> None:
    """No revision builds tables from the live models (`table.create()`, imports of the packages'
    tables): those follow the code, so a fresh and an upgraded database could differ."""
    for path in sorted(VERSIONS.glob("*.py")):
        src = path.read_text()
        assert not re.search(r"\.create\(\s*(bind|op\.get_bind)", src), path.name
        assert not re.search(r"^\s*(from|import) (fhirserver|dicom|smart_auth|portal|console)\b", src, re.M), \
            path.name
