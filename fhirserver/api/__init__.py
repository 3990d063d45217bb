"""HTTP layer (Flask only): routing, content negotiation, Prefer/ETag headers, OperationOutcome
answers. The interactions themselves are `fhirserver.interactions`."""
from fhirserver.api.http import blueprint, error_response, install_error_handlers

__all__ = ["blueprint", "error_response", "install_error_handlers"]
