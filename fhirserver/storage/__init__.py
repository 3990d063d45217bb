"""Storage: SQLAlchemy tables and the versioned repository (never looks at HTTP)."""
from fhirserver.storage.db import is_postgres, make_engine, ping, readable_tables
from fhirserver.storage.migrate import upgrade
from fhirserver.storage.repository import (
    Repository, StorageError, Stored, Tx, VersionConflict, format_instant, now_utc,
)
from fhirserver.storage.reads import ReadStatements
from fhirserver.storage.tables import resource, resource_history
from fhirserver.storage.conflicts import TransactionConflict, run as run_transaction

__all__ = ["Repository", "StorageError", "Stored", "Tx", "VersionConflict", "format_instant",
           "is_postgres", "make_engine", "now_utc", "resource", "resource_history", "upgrade"]
__all__ += ["ReadStatements", "TransactionConflict", "run_transaction", "ping", "readable_tables"]
