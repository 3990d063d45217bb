"""The patient and staff web portal. Not built yet: see issue 8."""
