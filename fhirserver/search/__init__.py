"""Search: parameters in, SQL conditions out (never looks at HTTP)."""
from fhirserver.search.basic import (
    RESULT_PARAMS, CompiledSearch, SearchError, compile_search, supported_params,
)
from fhirserver.search.dates import date_range

__all__ = ["RESULT_PARAMS", "CompiledSearch", "SearchError", "compile_search", "date_range",
           "supported_params"]
