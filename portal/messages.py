"""Secure messages: threads with the clinicians' replies, new messages and notes."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, request

from fhirserver.operations import human_name
from portal import core
from portal.web import _, back, now_iso, page, pid, ref_id


def _clinicians() -> list[dict]:
    return core.user_fhir().search("Practitioner", [("_count", "100")])


def _threads(rows: list[dict]) -> list[dict]:
    """Messages as threads: each message that answers another (`inResponseTo`) is listed under the
    first message of its thread, oldest reply first; threads are newest first."""
    by_id = {r.get("id"): r for r in rows}

    def root(r: dict) -> dict:
        seen = set()
        while r.get("id") not in seen:
            seen.add(r.get("id"))
            parent = next((by_id.get(ref_id(x, "Communication")) for x in r.get("inResponseTo") or []
                           if ref_id(x, "Communication") in by_id), None)
            if parent is None:
                break
            r = parent
        return r

    replies: dict[str, list[dict]] = {}
    tops = []
    for r in rows:
        top = root(r)
        if top is r:
            tops.append(r)
        else:
            replies.setdefault(top.get("id"), []).append(r)
    out = []
    for t in sorted(tops, key=lambda r: r.get("sent") or "", reverse=True):
        out.append({**t, "replies": sorted(replies.get(t.get("id"), []), key=lambda r: r.get("sent") or "")})
    return out


def _sender_name(ref: str | None, names: dict[str, str]) -> str:
    if not ref:
        return ""
    if ref == (g.user or {}).get("fhir_user") or ref == f"Patient/{pid()}":
        return _("You")
    return names.get(ref, ref)


def _messages_page(status: int = 200, **kw: Any) -> Response:
    rows = core.user_fhir().search("Communication", [("subject", f"Patient/{pid()}"), ("_sort", "-sent"),
                                                      ("_count", "100")])
    docs = _clinicians()
    names = {f"Practitioner/{c['id']}": human_name(c) for c in docs}
    return page("messages.html", status, msgs=_threads(rows), clinicians=docs,
                sender=lambda ref: _sender_name(ref, names), **kw)


def messages() -> Response:
    return _messages_page()


def send_message() -> Response:
    from fhirserver.notify import send_email

    form, errors = request.form, {}
    kind = form.get("kind", "message")
    to = form.get("to", "")
    docs = {c["id"]: c for c in _clinicians()}
    if kind == "message" and to not in docs:
        errors["to"] = _("Choose a clinician.")
    if kind == "message" and not form.get("subject", "").strip():
        errors["subject"] = _("Write a subject.")
    if not form.get("text", "").strip():
        errors["text" if kind == "message" else "note"] = _("Write your message.")
    if errors:
        return _messages_page(400, form=form, errors=errors)
    p = pid()
    me = g.user["fhir_user"] or f"Patient/{p}"
    body = {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{p}"},
            "sent": now_iso(), "sender": {"reference": me},
            "payload": [{"contentString": form["text"].strip()[:10000]}]}
    if kind == "message":
        body["recipient"] = [{"reference": f"Practitioner/{to}"}]
        body["topic"] = {"text": form["subject"].strip()[:200]}
        body["category"] = [{"text": "message"}]
    else:
        body["recipient"] = [{"reference": f"Patient/{p}"}]
        body["category"] = [{"text": "note"}]
        body["topic"] = {"text": "Note to my record"}
    f = core.user_fhir()
    with f.repo.transaction(write=True) as tx:
        made = f.create("Communication", body, tx)
        if kind == "message":
            email = next((t.get("value") for t in docs[to].get("telecom") or [] if t.get("system") == "email"), None)
            if email:
                link = f"{core.services().root_url()}/console/messages/{made.get('id')}"
                send_email(tx.conn, core.services().settings.smtp_url, email, "New secure message from a patient",
                           "A patient sent you a secure message in the portal. Sign in to the staff console "
                           f"to read it (the message is not included in this email):\n{link}\n", patient_id=p)
    return back("portal.messages", _("Your message was sent.") if kind == "message" else _("The note was saved."))


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/messages', messages, ['GET']),
        ('/messages/send', send_message, ['POST']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
