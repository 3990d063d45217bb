"""Messages: the inbox of patients' threads (Communication, `inResponseTo` for replies) that the
staff member may see, and the reply, sent as the staff member to the patient."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, abort, g, request

from console import core
from console.core import _, page


def _is_message(c: dict[str, Any]) -> bool:
    return any((cat.get("text") or "") == "message" for cat in c.get("category") or [])


def _parent(c: dict[str, Any]) -> str | None:
    return next((core.ref_id(r, "Communication") for r in c.get("inResponseTo") or []
                 if core.ref_id(r, "Communication")), None)


def threads() -> list[dict[str, Any]]:
    """Threads newest activity first: the first message with its replies, oldest reply first."""
    rows = [c for c in core.fhir().search("Communication", [("_sort", "-sent"), ("_count", "200")]) if _is_message(c)]
    by_id = {c["id"]: c for c in rows}

    def root(c: dict[str, Any]) -> dict[str, Any]:
        seen = set()
        while c["id"] not in seen:
            seen.add(c["id"])
            parent = by_id.get(_parent(c) or "")
            if parent is None:
                break
            c = parent
        return c

    tops: dict[str, dict[str, Any]] = {}
    for c in rows:
        top = root(c)
        t = tops.setdefault(top["id"], {**top, "replies": [], "last": top.get("sent") or ""})
        if c is not top:
            t["replies"].append(c)
            t["last"] = max(t["last"], c.get("sent") or "")
    for t in tops.values():
        t["replies"].sort(key=lambda c: c.get("sent") or "")
    return sorted(tops.values(), key=lambda t: t["last"], reverse=True)


def _names(refs: set[str]) -> dict[str, str]:
    f = core.fhir()
    out = {}
    for ref in refs:
        t, _s, i = ref.partition("/")
        if t in ("Patient", "Practitioner", "RelatedPerson") and i:
            out[ref] = core.display_name(f.read(t, i)) or ref
    return out


def index() -> Response:
    ts = threads()
    names = _names({(t.get("subject") or {}).get("reference", "") for t in ts})
    return page("messages.html", threads=ts, names=names)


def _thread(cid: str) -> dict[str, Any]:
    for t in threads():
        if t["id"] == cid or any(r["id"] == cid for r in t["replies"]):
            return t
    abort(404)


def show(cid: str) -> Response:
    t = _thread(cid)
    refs = {(t.get("subject") or {}).get("reference", "")}
    refs |= {(m.get("sender") or {}).get("reference", "") for m in [t, *t["replies"]]}
    return page("thread.html", t=t, names=_names(refs))


def reply(cid: str) -> Response:
    t = _thread(cid)
    text = (request.form.get("text") or "").strip()
    if not text:
        refs = {(t.get("subject") or {}).get("reference", "")} | {(m.get("sender") or {}).get("reference", "")
                                                                  for m in [t, *t["replies"]]}
        return page("thread.html", 400, t=t, names=_names(refs), errors={"text": _("Write your reply.")})
    pid = core.ref_id(t.get("subject"), "Patient")
    me = g.user.get("fhir_user")
    body = {"resourceType": "Communication", "status": "completed", "category": [{"text": "message"}],
            "subject": {"reference": f"Patient/{pid}"}, "inResponseTo": [{"reference": f"Communication/{t['id']}"}],
            "topic": t.get("topic") or {"text": ""}, "recipient": [{"reference": f"Patient/{pid}"}],
            "sent": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "payload": [{"contentString": text[:10000]}]}
    if me:
        body["sender"] = {"reference": me}
    if not body["topic"].get("text"):
        body.pop("topic")
    return core.write_then_back(lambda: core.fhir().create("Communication", body), "console.messages.show",
                                _("Your reply was sent."), cid=t["id"])


def blueprint() -> Blueprint:
    bp = Blueprint("messages", __name__)
    bp.add_url_rule("/messages", "index", index, methods=["GET"])
    bp.add_url_rule("/messages/<cid>", "show", show, methods=["GET"])
    bp.add_url_rule("/messages/<cid>/reply", "reply", reply, methods=["POST"])
    return bp
