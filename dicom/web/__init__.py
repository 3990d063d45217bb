"""DICOMweb under `/dicomweb`: STOW-RS, QIDO-RS, WADO-RS (instances, metadata, frames,
bulk data, rendered, thumbnails) and WADO-URI, per DICOM PS3.18.

Requests are authenticated by the same hook as the FHIR API (`smart_auth.before_fhir_request`:
bearer token -> Principal -> SmartPolicy, or OpenPolicy with --insecure-no-auth). A study is
visible when its ImagingStudy is visible under the policy; every request writes one AuditEvent.

Public API: `blueprint()` (registered by `fhirserver.app.create_app` at `/dicomweb`),
`lean_layer()` (the WSGI layer answering plain instance retrievals before Flask, `dicom.web.lean`),
`flush_audits()` (wait for the queued AuditEvents to be written).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from dicom.web.common import READS, error, flush_audits, install_reads

RS = ["GET", "HEAD"]


def blueprint() -> Blueprint:
    from smart_auth import after_fhir_request, before_fhir_request

    from dicom.web import qido, stow, wado

    bp = Blueprint("dicomweb", __name__)
    bp.record_once(lambda state: install_reads(state.app))
    bp.before_request(before_fhir_request)  # the FHIR API's authentication: same 401/403
    bp.after_request(after_fhir_request)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:  # 405, 413 ... as OperationOutcome, not HTML
        from fhirserver.api import error_response

        return error_response(error(exc.code or 500, exc.description or exc.name))

    def add(rule: str, endpoint: str, view: Any, methods: list[str] = RS) -> None:
        bp.add_url_rule(rule, endpoint, view, methods=methods)

    # base and WADO-URI
    def base_or_wado() -> Response:
        if request.args.get("requestType"):
            return wado.wado_uri()
        return Response(b'{"dicomweb": "PS3.18 STOW-RS, QIDO-RS, WADO-RS, WADO-URI"}',
                        content_type="application/json")

    add("", "base", base_or_wado)
    add("/", "base_slash", base_or_wado)
    add("/wado", "wado_uri", wado.wado_uri)

    # STOW-RS
    add("/studies", "stow", lambda: stow.store_parts(None), ["POST"])
    add("/studies/<study>", "stow_study", lambda study: stow.store_parts(study), ["POST"])

    # QIDO-RS
    add("/studies", "qido_studies", lambda: qido.search("STUDY", {}))
    add("/series", "qido_series", lambda: qido.search("SERIES", {}))
    add("/instances", "qido_instances", lambda: qido.search("IMAGE", {}))
    add("/studies/<study>/series", "qido_study_series",
        lambda study: qido.search("SERIES", {"StudyInstanceUID": study}))
    add("/studies/<study>/instances", "qido_study_instances",
        lambda study: qido.search("IMAGE", {"StudyInstanceUID": study}))
    add("/studies/<study>/series/<series>/instances", "qido_series_instances",
        lambda study, series: qido.search("IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series}))

    # WADO-RS
    add("/studies/<study>", "study", lambda study: wado.retrieve(study))
    add("/studies/<study>/series/<series>", "series", lambda study, series: wado.retrieve(study, series))
    add("/studies/<study>/series/<series>/instances/<sop>", "instance",
        lambda study, series, sop: wado.retrieve(study, series, sop))
    add("/studies/<study>/metadata", "study_metadata", lambda study: wado.metadata(study))
    add("/studies/<study>/series/<series>/metadata", "series_metadata",
        lambda study, series: wado.metadata(study, series))
    add("/studies/<study>/series/<series>/instances/<sop>/metadata", "instance_metadata",
        lambda study, series, sop: wado.metadata(study, series, sop))
    add("/studies/<study>/series/<series>/instances/<sop>/frames/<frame_list>", "frames", wado.frames)
    add("/studies/<study>/series/<series>/instances/<sop>/bulkdata/<tag>", "bulkdata", wado.bulkdata)

    # rendered and thumbnails
    add("/studies/<study>/rendered", "study_rendered", lambda study: wado.rendered(study))
    add("/studies/<study>/series/<series>/rendered", "series_rendered",
        lambda study, series: wado.rendered(study, series))
    add("/studies/<study>/series/<series>/instances/<sop>/rendered", "instance_rendered",
        lambda study, series, sop: wado.rendered(study, series, sop))
    add("/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/rendered", "frame_rendered",
        lambda study, series, sop, frame: wado.rendered(study, series, sop, frame))
    add("/studies/<study>/thumbnail", "study_thumbnail", lambda study: wado.rendered(study, thumbnail=True))
    add("/studies/<study>/series/<series>/thumbnail", "series_thumbnail",
        lambda study, series: wado.rendered(study, series, thumbnail=True))
    add("/studies/<study>/series/<series>/instances/<sop>/thumbnail", "instance_thumbnail",
        lambda study, series, sop: wado.rendered(study, series, sop, thumbnail=True))
    add("/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/thumbnail", "frame_thumbnail",
        lambda study, series, sop, frame: wado.rendered(study, series, sop, frame, thumbnail=True))

    def unknown(rest: str = "") -> Response:
        """404/405 as OperationOutcome for URLs under /dicomweb no handler takes."""
        from flask import current_app
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        adapter = current_app.url_map.bind_to_environ(request.environ)
        for method in ("GET", "POST"):
            try:
                endpoint, _ = adapter.match(method=method)
            except (NotFound, MethodNotAllowed):
                continue
            except HTTPException:
                continue
            if not endpoint.endswith(".unknown"):
                raise error(405, f"{request.method} is not supported on {request.path}")
        raise error(404, f"Unknown DICOMweb URL {request.path}")

    bp.add_url_rule("/<path:rest>", "unknown", unknown,
                    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    for rule in ("/studies", "/studies/<study>", "", "/"):
        bp.add_url_rule(rule, "unknown_" + (rule.strip("/").replace("<", "").replace(">", "")
                                            .replace("/", "_") or "base"),
                        unknown, methods=["PUT", "PATCH", "DELETE"])
    return bp


def lean_layer(flask_app: Any, app: Any, services: Any, report: Any, open_policy: Any = None, bearer_access: Any = None) -> Any:
    """`app` (the WSGI callable of `flask_app`, with this blueprint) behind
    `dicom.web.lean.LeanRetrieve` (imported here, not at import time)."""
    from dicom.web.lean import LeanRetrieve

    return LeanRetrieve(app, services, report, flask_app.extensions[READS], open_policy=open_policy, bearer_access=bearer_access)


__all__ = ["blueprint", "flush_audits", "lean_layer"]
