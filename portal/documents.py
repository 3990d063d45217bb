"""Documents: the patient's uploads (Binary + DocumentReference) and downloads."""
from __future__ import annotations

import base64
import re

from flask import Blueprint, Response, abort, g, request

from portal import core
from portal.web import _, back, download, now_iso, page, pid


UPLOAD_TYPES = {"application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "text/plain": ".txt"}


def documents() -> Response:
    docs = core.user_fhir().search("DocumentReference", [("patient", pid()), ("_sort", "-date"), ("_count", "100")])
    return page("documents.html", docs=docs, limit_mb=_upload_limit() // (1024 * 1024))


def _upload_limit() -> int:
    return int(getattr(core.services().settings, "portal_upload_max_bytes", 5 * 1024 * 1024))


def upload() -> Response:
    form, errors = request.form, {}
    file = request.files.get("file")
    data = file.read(_upload_limit() + 1) if file and file.filename else b""
    mime = (file.mimetype if file else "") or ""
    if not file or not file.filename:
        errors["file"] = _("Choose a file.")
    elif mime not in UPLOAD_TYPES:
        errors["file"] = _("This type of file is not accepted (PDF, JPEG, PNG or plain text).")
    elif len(data) > _upload_limit():
        errors["file"] = _("The file is too large (limit %(mb)s MB).", mb=_upload_limit() // (1024 * 1024))
    if not form.get("description", "").strip():
        errors["description"] = _("Write a description.")
    if errors:
        docs = core.user_fhir().search("DocumentReference", [("patient", pid()), ("_count", "100")])
        return page("documents.html", 400, docs=docs, form=form, errors=errors,
                    limit_mb=_upload_limit() // (1024 * 1024))
    p = pid()
    f = core.user_fhir()
    with f.repo.transaction(write=True) as tx:
        # both written with the patient's own policy; the Binary is the patient's data through its
        # securityContext (never through the DocumentReference that points at it)
        binary = f.create("Binary", {"resourceType": "Binary", "contentType": mime,
                                     "securityContext": {"reference": f"Patient/{p}"},
                                     "data": base64.b64encode(data).decode()}, tx)
        f.create("DocumentReference", {
            "resourceType": "DocumentReference", "status": "current",
            "type": {"text": "Uploaded by the patient"}, "subject": {"reference": f"Patient/{p}"},
            "date": now_iso(), "author": [{"reference": g.user["fhir_user"]}] if g.user["fhir_user"] else [],
            "description": form["description"].strip()[:500],
            "content": [{"attachment": {"contentType": mime, "url": f"Binary/{binary['id']}", "size": len(data),
                                        "title": re.sub(r"[^\w. -]", "_", file.filename)[:200]}}]}, tx)
    return back("portal.documents", _("The file was uploaded."))


def document_file(did: str) -> Response:
    f = core.user_fhir()
    doc = f.read("DocumentReference", did)
    if doc is None:
        abort(404)
    att = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    if att.get("data"):
        data = base64.b64decode(att["data"])
    else:
        from fhirserver.model import reference_id

        # the Binary is read with the patient's own policy too: a DocumentReference the patient
        # wrote pointing at another patient's Binary opens nothing
        bid = reference_id(att.get("url"), "Binary", core.services().fhir_base())
        b = f.read("Binary", bid) if bid else None
        if b is None:
            abort(404)
        data = base64.b64decode(b.get("data") or "")
    return download(data, att.get("contentType") or "application/octet-stream", att.get("title") or did)


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/documents', documents, ['GET']),
        ('/documents/upload', upload, ['POST']),
        ('/documents/<did>/file', document_file, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
