"""The access policy (who may see what), called by every entry point."""
from fhirserver.access.policy import OpenPolicy, Policy

__all__ = ["OpenPolicy", "Policy"]
