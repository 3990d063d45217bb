"""DICOMweb reads for the viewer (/viewer/?study=...&dicomweb=/console/dicomweb): the DICOMweb
views run with the signed-in staff member's own policy, so a study of another organization's
patient answers 404 exactly as it would to that staff member's bearer token."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g

from portal.imaging import READS  # the same GET-only reads the portal lets its viewer make


def dicomweb(path: str) -> Response:
    if not READS.fullmatch(path):
        abort(404)
    adapter = current_app.url_map.bind("localhost")
    try:
        endpoint, args = adapter.match("/dicomweb/" + path, method="GET")
    except Exception:  # noqa: BLE001 - no such DICOMweb read
        abort(404)
    g.fhir_access, g.fhir_principal = g.policy, g.principal
    return current_app.view_functions[endpoint](**args)


def blueprint() -> Blueprint:
    bp = Blueprint("imaging", __name__)
    bp.add_url_rule("/dicomweb/<path:path>", "dicomweb", dicomweb, methods=["GET"])
    return bp


__all__ = ["blueprint"]
