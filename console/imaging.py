"""DICOMweb reads for the viewer (/viewer/?study=...&dicomweb=/console/dicomweb): the portal's
viewer proxy, which runs the DICOMweb views with the signed-in user's own policy (`g.policy`,
set here by the console's session guard), so a study of another organization's patient answers
404 exactly as it would to that staff member's bearer token."""
from __future__ import annotations

from flask import Blueprint

from portal import dicomweb


def blueprint() -> Blueprint:
    bp = Blueprint("imaging", __name__)
    bp.add_url_rule("/dicomweb/<path:path>", "dicomweb", dicomweb, methods=["GET"])
    return bp


__all__ = ["blueprint"]
