"""Search: SearchParameter registry, index extraction, query compiler (never looks at HTTP)."""
from fhirserver.search.compiler import (
    RESULT_PARAMS, CompiledSearch, Compiler, Include, SearchError, SortKey, split_values,
)
from fhirserver.search.dates import date_range, split_prefix
from fhirserver.search.engine import SearchEngine
from fhirserver.search.extract import normalize, split_reference
from fhirserver.search.includes import MAX_INCLUDED, included
from fhirserver.search.paging import cursor_kinds, decode_cursor, encode_cursor
from fhirserver.search.registry import base_registry, compartment_params, patient_compartment_types
from fhirserver.search.security_context import PARAM as SECURITY_CONTEXT_PARAM

__all__ = ["RESULT_PARAMS", "CompiledSearch", "Compiler", "Include", "SearchEngine", "SearchError",
           "SortKey", "date_range", "normalize", "split_prefix", "split_reference", "split_values"]
__all__ += ["MAX_INCLUDED", "SECURITY_CONTEXT_PARAM", "compartment_params", "cursor_kinds", "decode_cursor",
            "encode_cursor", "included", "patient_compartment_types"]


def compile_search(res_type: str | None, params: list[tuple[str, str]], *, postgres: bool,
                   strict: bool) -> CompiledSearch:
    """Compile with the HL7 registry alone (no custom parameters, no access conditions): for
    internal lookups such as DICOM patient matching or scope query restrictions."""
    return Compiler(base_registry(), postgres=postgres).compile(res_type, params, strict=strict)


__all__ += ["compile_search"]
