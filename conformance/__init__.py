"""HL7 R4 definitions the server is built from, and the CapabilityStatement builder."""
from conformance.capability import capability_statement
from conformance.definitions import definitions_dir, load_definition

__all__ = ["capability_statement", "definitions_dir", "load_definition"]
