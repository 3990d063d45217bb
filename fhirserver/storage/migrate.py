"""Alembic migrations, run programmatically by `fhirserver db upgrade` and at `serve`."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

_HERE = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema to `revision` (idempotent). The packages' branches (dicom, smart_auth...)
    meet in a merge revision, so there is one head; "heads" still reaches every branch's end."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to `revision` (an id, `branch@id`, `-1` or `base`): the operator's
    way back when a new version has to be rolled back before its schema is kept."""
    command.downgrade(alembic_config(engine), revision)


def current_heads(engine: Engine) -> tuple[str, ...]:
    """The revisions the database is at (one once it is at the merged head)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def script_heads() -> tuple[str, ...]:
    """The newest revision this code ships (one: a test keeps it so)."""
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory(str(_HERE)).get_heads()))
