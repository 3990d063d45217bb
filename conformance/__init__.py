"""HL7 R4 definitions the server is built from (search parameters, compartments, the
OperationDefinitions). The CapabilityStatement builder is `conformance.capability`: it is not
imported here, so that reading a definition imports nothing of the server."""
from conformance.definitions import definitions_dir, load_definition

__all__ = ["definitions_dir", "load_definition"]
