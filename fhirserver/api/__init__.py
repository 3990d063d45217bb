"""HTTP layer: routing, content negotiation, Prefer/ETag headers, OperationOutcome errors."""
from fhirserver.api.http import blueprint, install_error_handlers
from fhirserver.api.outcome import FhirError

__all__ = ["FhirError", "blueprint", "install_error_handlers"]
