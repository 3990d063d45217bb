"""HTTP layer (Flask only): routing, content negotiation, Prefer/ETag headers, OperationOutcome
answers. The interactions themselves are `fhirserver.interactions`."""
from fhirserver.api.http import blueprint, error_response, install_error_handlers
from fhirserver.api.lean import LeanReads
from fhirserver.api.telemetry import install_telemetry, metrics_blueprint

__all__ = ["LeanReads", "blueprint", "error_response", "install_error_handlers", "install_telemetry", "metrics_blueprint"]
