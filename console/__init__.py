"""The clinic staff console under /console: server-rendered pages, one blueprint per area
(patients, new patient, patient detail, scan tickets, merge, unmatched studies, reports,
messages), acting with the signed-in staff member's own policy through the same FHIR
interactions and operations as the REST API. `blueprint()` builds it."""
from __future__ import annotations

from typing import Any


def blueprint() -> Any:
    from flask import Blueprint

    from console import (auth, detail, imaging, merge, messages, new_patient, patients, reports, tickets,
                         unmatched)

    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    auth.register(bp)
    for area in (patients, new_patient, detail, tickets, merge, unmatched, reports, messages, imaging):
        bp.register_blueprint(area.blueprint())
    return bp


__all__ = ["blueprint"]
