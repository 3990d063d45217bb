"""The clinic staff console under /console: server-rendered pages, one blueprint per area
(patients, new patient, patient detail, notes, meetings, new reports, access requests, scan
tickets, merge, unmatched studies, reports, messages), acting with the signed-in staff member's own policy through the same FHIR
interactions and operations as the REST API. `blueprint()` builds it."""
from __future__ import annotations

from typing import Any


def blueprint() -> Any:
    from flask import Blueprint

    from console import (access_requests, auth, detail, imaging, meetings, merge, messages, new_patient,
                         new_report, notes, patients, reports, tickets, unmatched)

    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    auth.register(bp)
    for area in (patients, new_patient, detail, notes, meetings, new_report, access_requests, tickets, merge,
                 unmatched, reports, messages, imaging):
        bp.register_blueprint(area.blueprint())
    return bp


__all__ = ["blueprint"]
