"""The patient's studies and the DICOMweb reads of the viewer, with the portal session."""
from __future__ import annotations

import re

from flask import Blueprint, Response, abort, current_app, g, request, url_for

from fhirserver.model import parse_count
from portal import core
from portal.web import page, pid
from viewer import built as viewer_built


def imaging() -> Response:
    studies = core.user_fhir().search("ImagingStudy", [("patient", pid()), ("_count", "100")])
    for s in studies:
        s["_uid"] = next((i.get("value", "").removeprefix("urn:oid:") for i in s.get("identifier") or []
                          if i.get("system") == "urn:dicom:uid"), "")
    return page("imaging.html", studies=studies, viewer_ready=viewer_built())


def viewer(study_id: str) -> Response:
    s = core.user_fhir().read("ImagingStudy", study_id)
    if s is None:
        abort(404)
    uid = next((i.get("value", "").removeprefix("urn:oid:") for i in s.get("identifier") or []
                if i.get("system") == "urn:dicom:uid"), "")
    series = s.get("series") or []
    si = min(parse_count(request.args.get("series", "0")) or 0, max(len(series) - 1, 0))
    instances = (series[si].get("instance") or []) if series else []
    n = min(parse_count(request.args.get("i", "0")) or 0, max(len(instances) - 1, 0))
    img = None
    if instances:
        img = url_for("portal.dicomweb", path=f"studies/{uid}/series/{series[si]['uid']}/instances/"
                      f"{instances[n]['uid']}/rendered")
    return page("viewer.html", s=s, series=series, si=si, n=n, count=len(instances), img=img)


_U = r"[0-9.]{1,64}"
# the reads the viewer makes (QIDO of a study's series and instances, WADO-RS metadata, frames,
# rendered images, WADO-URI for a download): GET only, never STOW or a study-less search
READS = re.compile("|".join((
    rf"studies/{_U}/(series|metadata|thumbnail|rendered)",
    rf"studies/{_U}/series/{_U}/(instances|metadata|thumbnail|rendered)",
    rf"studies/{_U}/series/{_U}/instances/{_U}/(metadata|thumbnail|rendered)",
    rf"studies/{_U}/series/{_U}/instances/{_U}/frames/[0-9]{{1,6}}(,[0-9]{{1,6}}){{0,99}}",
    r"wado",
)))


def dicomweb(path: str) -> Response:
    """DICOMweb reads for the signed-in user, through the DICOMweb views with the user's own policy
    (the same access gate as a bearer token: another patient's study answers 404)."""
    if not READS.fullmatch(path):
        abort(404)
    adapter = current_app.url_map.bind("localhost")
    try:
        endpoint, args = adapter.match("/dicomweb/" + path, method="GET")
    except Exception:  # noqa: BLE001
        abort(404)
    g.fhir_access, g.fhir_principal = g.policy, g.principal
    return current_app.view_functions[endpoint](**args)


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/imaging', imaging, ['GET']),
        ('/imaging/<study_id>', viewer, ['GET']),
        ('/dicomweb/<path:path>', dicomweb, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
