"""Notes on a patient (seed 001: a profile holds imaging, documents and notes): free text a staff
member writes, stored as a DocumentReference of type "Note" (LOINC 34109-9) with the text as its
attachment, so notes travel with the record ($everything, export, sharing) like any document."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, request

from console import core
from console.core import _, patient_or_404

NOTE_TYPE = {"system": "http://loinc.org", "code": "34109-9", "display": "Note"}
MAX_NOTE = 4000


def is_note(doc: dict[str, Any]) -> bool:
    return any(c.get("system") == NOTE_TYPE["system"] and c.get("code") == NOTE_TYPE["code"]
               for c in (doc.get("type") or {}).get("coding") or [])


def note_text(doc: dict[str, Any]) -> str:
    for c in doc.get("content") or []:
        data = (c.get("attachment") or {}).get("data")
        if data:
            try:
                return base64.b64decode(data).decode("utf-8", "replace")
            except ValueError:
                return ""
    return doc.get("description") or ""


def note_body(pid: str, text: str, author: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "DocumentReference", "status": "current", "type": {"coding": [NOTE_TYPE], "text": "Note"},
        "subject": {"reference": f"Patient/{pid}"}, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "description": text[:80],
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "title": "Note",
                                    "data": base64.b64encode(text.encode()).decode()}}]}
    if author:
        body["author"] = [{"reference": author}]
    return body


def add(pid: str) -> Response:
    patient_or_404(pid)
    text = (request.form.get("note") or "").strip()[:MAX_NOTE]
    if not text:
        return core.back("console.detail.show", _("Write the note first."), pid=pid)
    body = note_body(pid, text, g.user.get("fhir_user"))
    return core.write_then_back(lambda: core.fhir().create("DocumentReference", body), "console.detail.show",
                                _("The note was saved."), pid=pid)


def blueprint() -> Blueprint:
    bp = Blueprint("notes", __name__)
    bp.add_url_rule("/patients/<pid>/notes", "add", add, methods=["POST"])
    return bp
