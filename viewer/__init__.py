"""The DICOM viewer at /viewer/: a Cornerstone3D front end (source in viewer/src, built by
`make viewer` into viewer/static) served as static files. It reads studies through DICOMweb with
the caller's own credentials, so this blueprint grants nothing: it only hands out the files.

`/viewer/?study=<StudyInstanceUID>` opens a study. Credentials: the portal's session (through the
portal's DICOMweb proxy, the default), or a bearer token given in the URL fragment
(`#token=...`, then the viewer calls /dicomweb), or another same-origin DICOMweb root
(`&dicomweb=/path`) that authenticates its own way.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, redirect, request, send_from_directory

STATIC = Path(__file__).parent / "static"
# wasm-unsafe-eval: the image codecs are WebAssembly; blob: workers are Cornerstone's own
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
       "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
NOT_BUILT = ("<!doctype html><title>Viewer not built</title><p>The DICOM viewer is not built. Run "
             "<code>make viewer</code> (needs Node.js and npm) and reload.</p>")


def built() -> bool:
    return (STATIC / "index.html").is_file()


def _index() -> Response:
    if not built():
        return Response(NOT_BUILT, 503, mimetype="text/html")
    resp = send_from_directory(STATIC, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _asset(filename: str) -> Response:
    if not built():
        abort(404)
    resp = send_from_directory(STATIC / "assets", filename, max_age=365 * 86400)
    resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"  # names carry a content hash
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _no_slash() -> Response:
    qs = request.query_string.decode()
    return redirect("/viewer/" + (f"?{qs}" if qs else ""), 308)


def blueprint() -> Blueprint:
    bp = Blueprint("viewer", __name__)
    bp.add_url_rule("/", "index", _index, methods=["GET"])
    bp.add_url_rule("/assets/<path:filename>", "asset", _asset, methods=["GET"])
    return bp


def register(app) -> None:  # noqa: ANN001
    """Mount at /viewer (and answer /viewer without the slash)."""
    app.register_blueprint(blueprint(), url_prefix="/viewer")
    app.add_url_rule("/viewer", "viewer_no_slash", _no_slash, methods=["GET"])


__all__ = ["blueprint", "built", "register"]
