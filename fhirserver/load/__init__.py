"""`fhirserver load`: Bundles and NDJSON into a running server or straight into the database,
exactly once whatever the moment of an interruption (see `loader` for how)."""
from fhirserver.load.journal import FileState, Journal
from fhirserver.load.loader import Loader, run_load
from fhirserver.load.targets import (
    DirectTarget, FatalLoadError, Failure, HttpTarget, Result, diagnostics_of, entry_errors,
)

__all__ = ["DirectTarget", "FatalLoadError", "Failure", "FileState", "HttpTarget", "Journal", "Loader",
           "Result", "diagnostics_of", "entry_errors", "run_load"]
