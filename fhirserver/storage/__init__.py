"""Storage: SQLAlchemy tables and the versioned repository (never looks at HTTP)."""
from fhirserver.storage.db import is_postgres, make_engine, ping, readable_tables, reading
from fhirserver.storage.migrate import current_heads, downgrade, script_heads, upgrade
from fhirserver.storage.repository import (
    Built, Repository, StorageError, Stored, Tx, VersionConflict, format_instant, new_id, now_utc, stamp,
)
from fhirserver.storage.reads import ReadStatements
from fhirserver.storage.tables import (
    INDEX_TABLES, PK, idx_date, idx_number, idx_quantity, idx_reference, idx_string, idx_text, idx_token, idx_uri,
    metadata, resource, resource_compartment, resource_history,
)
from fhirserver.storage.batches import BATCH_ID_SYSTEM, MAX_KEY as MAX_BATCH_KEY, claim as claim_batch
from fhirserver.storage.conflicts import TransactionConflict, run as run_transaction
from fhirserver.storage.budget import install_budget, is_cancelled

__all__ = ["Repository", "StorageError", "Stored", "Tx", "VersionConflict", "format_instant",
           "is_postgres", "make_engine", "now_utc", "resource", "resource_history", "upgrade"]
__all__ += ["Built", "new_id", "stamp"]  # the audit writer builds its AuditEvents itself (Tx.insert_built)
__all__ += ["ReadStatements", "TransactionConflict", "run_transaction", "ping", "readable_tables", "reading"]
# The tables other packages join or extend (their own tables go on the same `metadata`, with `PK` keys),
# the load-batch identifier system, the statement budget and the migrations the CLI reports on.
__all__ += ["INDEX_TABLES", "PK", "idx_date", "idx_number", "idx_quantity", "idx_reference", "idx_string", "idx_text",
            "idx_token", "idx_uri", "metadata", "resource_compartment"]
__all__ += ["BATCH_ID_SYSTEM", "MAX_BATCH_KEY", "claim_batch", "current_heads", "downgrade", "install_budget", "is_cancelled", "script_heads"]
