"""Portal pages through the Flask test client: access rules, form validation (messages in the
user's language, nothing typed lost), booking (and the race for one slot), uploads, messages,
sharing, PDFs (checked with pypdf) and the FHIR `Accept: application/pdf` / `$render`."""
from __future__ import annotations

import io
import json
import re
import threading

import pytest
from pypdf import PdfReader

from fhirserver.access import SystemJob
from portal_helpers import admin_token, csrf_of, login


def _pdf_text(data: bytes) -> str:
    assert data[:5] == b"%PDF-"
    return "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)


def test_login_errors_and_lockout(papp):
    c = papp.test_client()
    r = c.get("/portal/")
    assert r.status_code == 303 and "/portal/login" in r.headers["Location"]
    r = c.get("/portal/login")
    r = c.post("/portal/login", data={"csrf": csrf_of(r.text), "username": "ana@example.org", "password": "nope"})
    assert r.status_code == 401 and "Wrong username or password" in r.text
    assert 'value="ana@example.org"' in r.text  # nothing typed lost (but the password)
    r = c.post("/portal/login", data={"csrf": "forged", "username": "ana@example.org", "password": "demo-pass-1"})
    assert r.status_code == 400
    for _ in range(6):
        r = c.post("/portal/login", data={"csrf": csrf_of(r.text), "username": "ana@example.org", "password": "x"})
    assert "locked" in r.text


def test_spanish_messages_and_language_kept_in_patient(papp, ana):
    r = ana.get("/portal/profile")
    assert ana.post("/portal/lang", data={"csrf": csrf_of(r.text), "lang": "es"}).status_code == 303
    r = ana.post("/portal/profile", data={"csrf": csrf_of(r.text), "lang": "es", "mobile": "abc",
                                          "question": "Color?"})
    assert r.status_code == 400
    assert "Escriba un número de móvil válido" in r.text and 'value="Color?"' in r.text
    r = ana.post("/portal/profile", data={"csrf": csrf_of(r.text), "lang": "es", "mobile": "+34 611 222 333"})
    assert r.status_code == 303
    with papp.test_request_context("/"):
        from fhirserver.interactions import FhirRequest, dispatch

        svc = papp.extensions["fhirserver"]
        with svc.repo.transaction() as tx:
            body = dispatch(svc.context(SystemJob("test check")), tx, FhirRequest("GET", "Patient", "demo-ana")).body
        pat = json.loads(body) if isinstance(body, str) else body
    assert pat["communication"][0]["language"]["coding"][0]["code"] == "es"
    r = ana.get("/portal/reports")
    assert "Informes" in r.text and '<html lang="es">' in r.text


def test_reports_only_own_and_pdf(papp, ana):
    r = ana.get("/portal/reports")
    assert "Blood panel" in r.text
    assert ana.get("/portal/reports/demo-bob-rep").status_code == 404  # another patient's report
    assert ana.get("/portal/reports/demo-bob-rep.pdf").status_code == 404
    pdf = ana.get("/portal/reports/demo-ana-rep.pdf")
    assert pdf.mimetype == "application/pdf"
    text = _pdf_text(pdf.data)
    assert "Ana Torres" in text and "Sunrise Dental" in text and "Hemoglobin" in text and "Normal blood panel" in text


def test_share_link_opens_and_revokes(papp, ana):
    r = ana.get("/portal/reports/demo-ana-rep?share=1")
    url = re.search(r'id="share-url" class="wide">|value="(http[^"]+/portal/share/[^"]+)"', r.text).group(1)
    path = url.split("http://testserver", 1)[-1]
    anon = papp.test_client()
    r = anon.get(path)
    assert r.status_code == 200 and "Ana Torres" in _pdf_text(r.data)
    assert anon.get(path[:-3] + "xyz").status_code == 410
    page = ana.get("/portal/reports/demo-ana-rep")
    ana.post("/portal/reports/demo-ana-rep/revoke", data={"csrf": csrf_of(page.text)})
    assert anon.get(path).status_code == 410


def test_fhir_pdf_accept_and_render(papp):
    c = papp.test_client()
    tok = admin_token(papp)
    h = {"Authorization": f"Bearer {tok}", "Accept": "application/pdf"}
    r = c.get("/fhir/DiagnosticReport/demo-ana-rep", headers=h)
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert "Ana Torres" in _pdf_text(r.data)
    r = c.get("/fhir/DiagnosticReport/demo-ana-rep/$render", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and "Blood panel" in _pdf_text(r.data)
    r = c.get("/fhir/DiagnosticReport/demo-ana-rep", headers={"Authorization": f"Bearer {tok}"})
    assert r.mimetype == "application/fhir+json"


def test_booking_and_cancel_rules(papp, ana):
    r = ana.get("/portal/appointments")
    assert "demo-slot0" in r.text and "demo-slot-closed" not in r.text  # only schedules open online
    r = ana.post("/portal/appointments/book", data={"csrf": csrf_of(r.text), "reason": "tooth ache"})
    assert r.status_code == 400 and "Choose a time." in r.text and 'value="tooth ache"' in r.text
    r = ana.post("/portal/appointments/book", data={"csrf": csrf_of(r.text), "slot": "demo-slot0"})
    assert r.status_code == 303
    svc = papp.extensions["fhirserver"]
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot0").body)["status"] == "busy"
    r = ana.get("/portal/appointments")
    assert "booked" in r.text and 'id="slot-demo-slot0"' not in r.text
    bob = login(papp, "bob@example.org")
    page = bob.get("/portal/appointments")
    r = bob.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "demo-slot0"})
    assert r.status_code == 409 and "just booked by someone else" in r.text
    r = bob.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "demo-slot-closed"})
    assert r.status_code == 409  # not open for online booking
    aid = re.search(r'/portal/appointments/([^/"]+)/cancel', ana.get("/portal/appointments").text).group(1)
    r = ana.post(f"/portal/appointments/{aid}/cancel", data={"csrf": csrf_of(ana.get("/portal/appointments").text)})
    assert r.status_code == 303
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot0").body)["status"] == "free"
        assert json.loads(tx.current("Appointment", aid).body)["status"] == "cancelled"


def test_cancel_too_late_is_refused(papp, ana):
    svc = papp.extensions["fhirserver"]
    # a slot in 2 hours: bookable, but cancelling online is too late (rule: 24 hours)
    from datetime import datetime, timedelta, timezone
    start = datetime.now(timezone.utc) + timedelta(hours=2)
    body = {"resourceType": "Slot", "id": "soon", "schedule": {"reference": "Schedule/demo-sched"}, "status": "free",
            "start": start.isoformat(timespec="seconds"), "end": (start + timedelta(minutes=30)).isoformat(timespec="seconds")}
    with svc.repo.transaction(write=True) as tx:
        tx.create("Slot", body, "soon")
    page = ana.get("/portal/appointments")
    assert ana.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "soon"}).status_code == 303
    page = ana.get("/portal/appointments")
    aid = re.search(r'/portal/appointments/([^/"]+)/cancel', page.text).group(1)
    r = ana.post(f"/portal/appointments/{aid}/cancel", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 409 and "24 hours" in r.text


def test_two_patients_never_book_the_same_slot(papp):
    """Many threads race for one slot: exactly one Appointment, the Slot busy, the others refused."""
    from portal import core
    from portal.views import SlotTaken, book_slot
    from smart_auth import policy_for, store

    svc = papp.extensions["fhirserver"]
    users = [store.check_login(svc.repo.engine, e, "demo-pass-1") for e in ("ana@example.org", "bob@example.org")]
    n = 6
    barrier = threading.Barrier(n)
    results: list = []

    def run(i: int) -> None:
        u = users[i % 2]
        with papp.test_request_context("/portal/"):
            from flask import g
            g.principal = core.principal_for(u, u["patients"][0])
            g.policy = policy_for(g.principal)
            barrier.wait()
            try:
                results.append(("ok", book_slot(g.policy, u["patients"][0], "demo-slot3")["id"]))
            except SlotTaken:
                results.append(("taken", None))
            except Exception as exc:  # noqa: BLE001  (SQLite busy etc. would show here)
                results.append(("error", repr(exc)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r[0] for r in results) == ["ok"] + ["taken"] * (n - 1), results
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot3").body)["status"] == "busy"
    with papp.test_request_context("/"):
        from fhirserver.interactions import FhirRequest, dispatch
        with svc.repo.transaction() as tx:
            b = dispatch(svc.context(SystemJob("test check")), tx, FhirRequest("GET", "Appointment", params=[("slot", "Slot/demo-slot3")])).body
    b = json.loads(b) if isinstance(b, str) else b
    assert b.get("total", len(b.get("entry") or [])) == 1


def test_upload_limits_and_download(papp, ana):
    page = ana.get("/portal/documents")
    r = ana.post("/portal/documents/upload", data={"csrf": csrf_of(page.text), "description": "my x-ray",
                                                     "file": (io.BytesIO(b"MZ..."), "virus.exe", "application/x-msdownload")},
                 content_type="multipart/form-data")
    assert r.status_code == 400 and "not accepted" in r.text and 'value="my x-ray"' in r.text
    big = io.BytesIO(b"%PDF-" + b"0" * (5 * 1024 * 1024 + 10))
    r = ana.post("/portal/documents/upload", data={"csrf": csrf_of(page.text), "description": "big",
                                                     "file": (big, "big.pdf", "application/pdf")},
                 content_type="multipart/form-data")
    assert r.status_code in (400, 413)
    r = ana.post("/portal/documents/upload", data={"csrf": csrf_of(page.text), "description": "Allergy letter",
                                                     "file": (io.BytesIO(b"penicillin"), "letter.txt", "text/plain")},
                 content_type="multipart/form-data")
    assert r.status_code == 303
    page = ana.get("/portal/documents")
    did = re.search(r'/portal/documents/([^/"]+)/file', page.text).group(1)
    assert "Allergy letter" in page.text
    assert ana.get(f"/portal/documents/{did}/file").data == b"penicillin"
    bob = login(papp, "bob@example.org")
    assert bob.get(f"/portal/documents/{did}/file").status_code == 404


def test_message_emails_the_clinician(papp, ana, portal_smtp):
    page = ana.get("/portal/messages")
    r = ana.post("/portal/messages/send", data={"csrf": csrf_of(page.text), "kind": "message", "to": "",
                                                "subject": "Question", "text": "Can I eat before the test?"})
    assert r.status_code == 400 and "Choose a clinician." in r.text and "Can I eat before the test?" in r.text
    r = ana.post("/portal/messages/send", data={"csrf": csrf_of(page.text), "kind": "message", "to": "demo-dr",
                                                "subject": "Question", "text": "Can I eat before the test?"})
    assert r.status_code == 303
    assert "Can I eat" in ana.get("/portal/messages").text
    mails = portal_smtp.to("dr.moreno@clinic.example")
    assert mails and "Can I eat" not in mails[0]["body"]  # a notice, not the message


def test_questionnaire_required_items(papp, ana):
    page = ana.get("/portal/questionnaires/demo-q")
    r = ana.post("/portal/questionnaires/demo-q", data={"csrf": csrf_of(page.text), "q_which": "aspirin",
                                                         "q_smoke": "a few"})
    assert r.status_code == 400 and "This answer is required." in r.text and "Enter a whole number." in r.text
    assert 'value="aspirin"' in r.text
    r = ana.post("/portal/questionnaires/demo-q", data={"csrf": csrf_of(page.text), "q_allergies": "true",
                                                         "q_smoke": "0", "q_pain": "some"})
    assert r.status_code == 303
    assert "health-history" in ana.get("/portal/questionnaires").text


def test_grant_and_revoke_sharing_and_access_log(papp, ana):
    page = ana.get("/portal/sharing")
    r = ana.post("/portal/sharing/grant", data={"csrf": csrf_of(page.text), "organization": ""})
    assert r.status_code == 400 and "Choose an organization." in r.text
    r = ana.post("/portal/sharing/grant", data={"csrf": csrf_of(page.text), "organization": "demo-other",
                                                "what": "imaging"})
    assert r.status_code == 303
    page = ana.get("/portal/sharing")
    assert "Harbor Orthodontics" in page.text and "Imaging only" in page.text
    cid = re.search(r'/portal/sharing/([^/"]+)/revoke', page.text).group(1)
    ana.post(f"/portal/sharing/{cid}/revoke", data={"csrf": csrf_of(page.text)})
    assert "No one else has access." in ana.get("/portal/sharing").text
    assert ana.get("/portal/access-log").status_code == 200


def test_guardian_switches_between_children(papp):
    c = login(papp, "carmen@example.org")
    page = c.get("/portal/reports")
    assert "Leo" in page.text and "Mia" in page.text
    c.post("/portal/switch", data={"csrf": csrf_of(page.text), "patient": "demo-mia"})
    pdf = c.get("/portal/reports/demo-mia-rep.pdf")
    assert "Mia Garcia" in _pdf_text(pdf.data)
    assert c.get("/portal/reports/demo-ana-rep").status_code == 404
    c.post("/portal/switch", data={"csrf": csrf_of(page.text), "patient": "demo-ana"})  # not theirs: ignored
    assert c.get("/portal/reports/demo-ana-rep").status_code == 404


def test_invoice_pdf(papp, ana):
    assert "Ana Torres" in _pdf_text(ana.get("/portal/invoices/demo-ana-inv.pdf").data)
    assert ana.get("/portal/invoices/demo-bob-inv.pdf").status_code == 404


def test_forgot_password_with_security_answer(papp, portal_smtp):
    c = papp.test_client()
    page = c.get("/portal/forgot")
    r = c.post("/portal/forgot", data={"csrf": csrf_of(page.text), "email": "ana@example.org"})
    assert r.status_code == 200
    link = re.search(r"(http://\S+/portal/reset\?token=\S+)", portal_smtp.to("ana@example.org")[-1]["body"]).group(1)
    path = link.split("http://testserver", 1)[-1]
    page = c.get(path)
    assert "First pet" in page.text
    token = path.split("token=")[1]
    r = c.post("/portal/reset", data={"csrf": csrf_of(page.text), "token": token, "answer": "cat",
                                      "new_password": "another-pass-2"})
    assert r.status_code == 400 and "not right" in r.text
    r = c.post("/portal/reset", data={"csrf": csrf_of(page.text), "token": token, "answer": "Rex",
                                      "new_password": "another-pass-2"})
    assert r.status_code == 303
    login(papp, "ana@example.org", "another-pass-2")
    assert c.get(path).status_code == 410  # the link works once (bound to the old password)


def test_messages_show_clinician_replies_as_threads(papp, ana):
    page = ana.get("/portal/messages")
    assert ana.post("/portal/messages/send", data={"csrf": csrf_of(page.text), "kind": "message", "to": "demo-dr",
                                                   "subject": "Fasting", "text": "Must I fast?"}).status_code == 303
    svc = papp.extensions["fhirserver"]
    from sqlalchemy import text

    with svc.repo.engine.connect() as c:
        qid = c.execute(text("SELECT res_id FROM resource WHERE res_type = 'Communication'")).scalar()
    with svc.repo.transaction(write=True) as tx:
        tx.update("Communication", "reply-1", {
            "resourceType": "Communication", "id": "reply-1", "status": "completed",
            "subject": {"reference": "Patient/demo-ana"}, "inResponseTo": [{"reference": f"Communication/{qid}"}],
            "sent": "2099-01-01T00:00:00+00:00", "sender": {"reference": "Practitioner/demo-dr"},
            "payload": [{"contentString": "Yes, eight hours."}]})
    r = ana.get("/portal/messages").text
    thread = r.split(f'id="thread-{qid}"', 1)[1]
    assert '<ul class="replies"' in thread and "Yes, eight hours." in thread and "Dr. Lucia Moreno" in thread
    assert thread.index("Must I fast?") < thread.index("Yes, eight hours.")
    assert r.count('class="thread"') == 1
