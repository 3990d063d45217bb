"""Reports without a patient (found by keywords, attached) and the messages inbox (the email
notice's link, the thread, the reply), as staff of two organizations."""
from __future__ import annotations

import re

from console_helpers import login, post, read
from web_helpers import portal_csrf, portal_login


def _unassigned(moreno, keyword: str) -> str:  # noqa: ANN001
    """A report filed by the clinic's staff through the console's own policy (REST would do the same)."""
    from console import core

    app = moreno.application
    with app.test_request_context("/console/reports"):
        from flask import g

        from smart_auth import policy_for, store

        from sqlalchemy import select

        from smart_auth.tables import auth_user

        eng = app.extensions["fhirserver"].repo.engine
        with eng.connect() as conn:
            pk = conn.execute(select(auth_user.c.pk).where(auth_user.c.username == "staff@clinic.example")).scalar_one()
        user = store.get_user(eng, pk)
        g.principal = core.principal_for(user)
        made = core.StaffFhir(policy_for(g.principal)).create("DiagnosticReport", {
            "resourceType": "DiagnosticReport", "status": "final", "code": {"text": f"Panoramic {keyword}"},
            "conclusion": f"Session {keyword}: no caries."})
    return made["id"]


def test_reports_without_patient_found_by_keywords_and_attached(capp, moreno, harbor):  # noqa: ANN001
    rid = _unassigned(moreno, "blue-lagoon-42")
    other = _unassigned(moreno, "red-river")
    page = moreno.get("/console/reports?keywords=lagoon-42").text
    assert "Panoramic blue-lagoon-42" in page and "red-river" not in page
    assert "blue-lagoon-42" not in harbor.get("/console/reports?keywords=lagoon-42").text
    assert harbor.get(f"/console/reports/{rid}/attach").status_code == 404
    assert post(harbor, f"/console/reports/{rid}/attach", {"patient": "harbor-eva"}).status_code == 404
    assert 'value="demo-ana"' in moreno.get(f"/console/reports/{rid}/attach?q=Torres").text
    r = post(moreno, f"/console/reports/{rid}/attach", {})
    assert r.status_code == 400 and "Choose a patient." in r.text
    r = post(moreno, f"/console/reports/{rid}/attach", {"patient": "demo-ana"})
    assert r.status_code == 303
    assert read(capp, "DiagnosticReport", rid)["subject"]["reference"] == "Patient/demo-ana"
    assert "Panoramic blue-lagoon-42" in moreno.get("/console/patients/demo-ana").text
    assert "blue-lagoon-42" not in moreno.get("/console/reports").text and other


def test_messages_inbox_link_thread_and_reply(capp, moreno, harbor, console_smtp):  # noqa: ANN001
    ana = portal_login(capp, "ana@example.org")
    r = ana.post("/portal/messages/send", data={"csrf": portal_csrf(ana), "kind": "message", "to": "demo-dr",
                                                "subject": "Tooth pain", "text": "My molar hurts since Monday."})
    assert r.status_code == 303
    from fhirserver.notify import outbox

    mails = [m for m in outbox(capp.extensions["fhirserver"].repo.engine, 20) if "dr.moreno" in str(m)]
    assert mails
    link = re.search(r"http://testserver(/console/messages/[A-Za-z0-9.-]+)", str(mails[0]))
    assert link, mails[0]
    assert "molar" not in str(mails[0])  # the message itself is not in the email
    inbox = moreno.get("/console/messages").text
    assert "Tooth pain" in inbox and "Ana Torres" in inbox
    assert "Tooth pain" not in harbor.get("/console/messages").text
    thread = moreno.get(link.group(1))
    assert thread.status_code == 200 and "My molar hurts since Monday." in thread.text
    assert harbor.get(link.group(1)).status_code == 404
    cid = link.group(1).rsplit("/", 1)[1]
    assert post(harbor, f"/console/messages/{cid}/reply", {"text": "spam"}).status_code == 404
    r = post(moreno, f"/console/messages/{cid}/reply", {"text": ""})
    assert r.status_code == 400 and "Write your reply." in r.text
    r = post(moreno, f"/console/messages/{cid}/reply", {"text": "Come tomorrow at 9."})
    assert r.status_code == 303
    assert "Come tomorrow at 9." in moreno.get(link.group(1)).text
    assert "Come tomorrow at 9." in ana.get("/portal/messages").text  # the patient sees the reply
    assert login(capp, "staff@clinic.example").get("/console/messages").status_code == 200
