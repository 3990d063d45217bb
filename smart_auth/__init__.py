"""SMART on FHIR authorization server. Not built yet: see issue 6."""
