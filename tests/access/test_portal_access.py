"""The portal acts as the signed-in patient (or guardian), never as the server: attacks a patient
can mount with their own token and their own portal session, each first shown to work on the
caller's own data, then refused (404/403/410) for another patient's, with nothing of it shown.

Setup mirrors tests/portal/conftest.py: the auth-on app with a real SMTP server, the demo clinic
(Ana and Bob are patients, Carmen the guardian of Leo and Mia), signed in through the login form.
"""
from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from pypdf import PdfReader

from tests.conftest import app_fixture, emptied, run_smtp_server
from web_helpers import shown_text

AUTH_TABLES = ("auth_token", "auth_code", "auth_session", "auth_user", "lifecycle_invitation", "lifecycle_account",
               "lifecycle_email", "lifecycle_access_request", "notify_outbox", "portal_slot_booking",
               "portal_share_revocation")
PASSWORD = "demo-pass-1"
BOB_SECRET = b"bob-private-letter-7731"
BOB_MARKER = "Bob-only-marker-4242"


# -- fixtures and helpers (as tests/portal/conftest.py and portal_helpers.py) ------------------------
@pytest.fixture(scope="module")
def access_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="module")
def access_session_app(settings, session_app, access_smtp, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=access_smtp.url), open_apps)


@pytest.fixture()
def papp(access_session_app, app):  # noqa: ANN001, ANN201
    """Auth-on app on an emptied database seeded with the demo clinic and its logins."""
    from portal.demo import seed

    seed(emptied(access_session_app, AUTH_TABLES))
    return access_session_app


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(app, username: str):  # noqa: ANN001, ANN201
    c = app.test_client()
    r = c.get("/portal/login")
    r = c.post("/portal/login", data={"csrf": csrf_of(r.text), "username": username, "password": PASSWORD})
    assert r.status_code == 303, r.text[:500]
    return c


def _user(app, username: str) -> dict:  # noqa: ANN001
    from smart_auth import store

    return store.check_login(app.extensions["fhirserver"].repo.engine, username, PASSWORD)


def token(app, username: str, patient: str | None = None, scope: str = "patient/*.cruds") -> dict:  # noqa: ANN001
    """Authorization headers of an access token a SMART app of this user would hold."""
    from smart_auth import store

    u = _user(app, username)
    ctx = {"role": u["role"], "patient": patient or (u["patients"] or [None])[0], "patients": u["patients"],
           "organizations": u["organizations"], "fhirUser": u["fhir_user"]}
    tok, _pk = store.save_token(app.extensions["fhirserver"].repo.engine, kind="access", grant_id=store.new_token(8),
                                client_id="fhirserver-portal", user_pk=u["pk"], scope=scope, context=ctx,
                                lifetime=600)
    return {"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"}


def put(app, body: dict) -> None:  # noqa: ANN001
    """Clinic data written by the server itself (as the staff's EHR would)."""
    svc = app.extensions["fhirserver"]
    with svc.repo.transaction(write=True) as tx:
        if tx.current(body["resourceType"], body["id"]) is None:
            tx.create(body["resourceType"], body, body["id"])
        else:
            tx.update(body["resourceType"], body["id"], body)


def pdf_text(data: bytes) -> str:
    assert data[:5] == b"%PDF-"
    return "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)


def upload(c, description: str, data: bytes) -> str:  # noqa: ANN001
    """Upload a file in the portal; the DocumentReference id of the newest upload."""
    page = c.get("/portal/documents")
    r = c.post("/portal/documents/upload", data={"csrf": csrf_of(page.text), "description": description,
                                                 "file": (io.BytesIO(data), "letter.txt", "text/plain")},
               content_type="multipart/form-data")
    assert r.status_code == 303, r.text[:300]
    return re.search(r'/portal/documents/([^/"]+)/file', c.get("/portal/documents").text).group(1)


def binary_of(app, doc_id: str) -> str:  # noqa: ANN001
    svc = app.extensions["fhirserver"]
    with svc.repo.transaction() as tx:
        doc = json.loads(tx.current("DocumentReference", doc_id).body)
    return doc["content"][0]["attachment"]["url"].split("/")[1]


def post_document(client, headers: dict, patient: str, url: str) -> str:  # noqa: ANN001
    """A DocumentReference in the caller's own record whose attachment points at `url`."""
    r = client.post("/fhir/DocumentReference", headers=headers, data=json.dumps({
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{patient}"},
        "description": "pointer", "content": [{"attachment": {"contentType": "text/plain", "url": url}}]}))
    assert r.status_code == 201, r.text
    return json.loads(r.data)["id"]


# -- 1. documents: the Binary is read with the patient's policy ---------------------------------------
def test_document_file_is_read_through_the_patients_own_policy(papp):
    ana, bob = login(papp, "ana@example.org"), login(papp, "bob@example.org")
    bob_doc = upload(bob, "Bob's letter", BOB_SECRET)
    assert bob.get(f"/portal/documents/{bob_doc}/file").data == BOB_SECRET  # his own file works
    ana_doc = upload(ana, "Ana's letter", b"ana-own-letter")
    assert ana.get(f"/portal/documents/{ana_doc}/file").data == b"ana-own-letter"
    bob_bin = binary_of(papp, bob_doc)

    c, h = papp.test_client(), token(papp, "ana@example.org")
    # Ana's own record, pointing at Bob's file, in every spelling of the reference
    for url in (f"Binary/{bob_bin}", f"http://testserver/fhir/Binary/{bob_bin}", f"Binary/{bob_bin}/",
                f"Binary/{bob_bin}/_history/1"):
        did = post_document(c, h, "demo-ana", url)
        r = ana.get(f"/portal/documents/{did}/file")
        assert r.status_code == 404 and BOB_SECRET not in r.data, url
    assert bob.get(f"/portal/documents/{ana_doc}/file").status_code == 404  # and the other way round
    assert f"/portal/documents/{bob_doc}/file" not in ana.get("/portal/documents").text


def test_guardian_cannot_open_a_non_childs_file(papp):
    ana, carmen = login(papp, "ana@example.org"), login(papp, "carmen@example.org")
    ana_doc = upload(ana, "Ana's letter", b"ana-private-letter")
    leo_doc = upload(carmen, "Leo's letter", b"leo-letter")
    assert carmen.get(f"/portal/documents/{leo_doc}/file").data == b"leo-letter"  # her child's file works
    c, h = papp.test_client(), token(papp, "carmen@example.org", "demo-leo")
    did = post_document(c, h, "demo-leo", f"Binary/{binary_of(papp, ana_doc)}")
    r = carmen.get(f"/portal/documents/{did}/file")
    assert r.status_code == 404 and b"ana-private-letter" not in r.data
    assert carmen.get(f"/portal/documents/{ana_doc}/file").status_code == 404


def test_rest_binary_follows_its_security_context(papp):
    """`GET Binary/x` and the portal obey one rule: the Binary is its securityContext's patient's data,
    whether the context is the Patient or a DocumentReference of theirs."""
    c = papp.test_client()
    ana_h, bob_h = token(papp, "ana@example.org"), token(papp, "bob@example.org")
    r = c.post("/fhir/Binary", headers=ana_h, data=json.dumps({
        "resourceType": "Binary", "contentType": "text/plain", "securityContext": {"reference": "Patient/demo-ana"},
        "data": "YW5h"}))
    assert r.status_code == 201, r.text  # a patient may write a Binary of their own
    own = json.loads(r.data)["id"]
    assert c.get(f"/fhir/Binary/{own}", headers=ana_h).status_code == 200
    assert c.get(f"/fhir/Binary/{own}", headers=bob_h).status_code == 404
    r = c.post("/fhir/Binary", headers=ana_h, data=json.dumps({
        "resourceType": "Binary", "contentType": "text/plain", "securityContext": {"reference": "Patient/demo-bob"},
        "data": "eA=="}))
    assert r.status_code == 403  # not into another patient's record
    r = c.post("/fhir/Binary", headers=ana_h, data=json.dumps({"resourceType": "Binary", "contentType": "text/plain",
                                                               "data": "eA=="}))
    assert r.status_code == 403  # nor as nobody's data

    # Bob's file whose context is Bob's DocumentReference
    put(papp, {"resourceType": "DocumentReference", "id": "bob-scan", "status": "current",
               "subject": {"reference": "Patient/demo-bob"},
               "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/bob-scan-file"}}]})
    put(papp, {"resourceType": "Binary", "id": "bob-scan-file", "contentType": "text/plain",
               "securityContext": {"reference": "DocumentReference/bob-scan"}, "data": "Ym9iLXNjYW4tc2VjcmV0"})
    r = c.get("/fhir/Binary/bob-scan-file", headers=bob_h)
    assert r.status_code == 200 and b"Ym9iLXNjYW4tc2VjcmV0" in r.data
    assert login(papp, "bob@example.org").get("/portal/documents/bob-scan/file").data == b"bob-scan-secret"
    r = c.get("/fhir/Binary/bob-scan-file", headers=ana_h)
    assert r.status_code == 404 and b"Ym9iLXNjYW4tc2VjcmV0" not in r.data
    r = c.get("/fhir/Binary", headers=ana_h)
    assert b"bob-scan-file" not in r.data and own.encode() in r.data  # searches too
    for path in ("/fhir/Binary/_history", "/fhir/_history", "/fhir/?_type=Binary,DocumentReference"):
        r = c.get(path, headers=ana_h)  # and history, at type and system level
        assert r.status_code == 200 and own.encode() in r.data and b"bob-scan" not in r.data, path
    did = post_document(c, ana_h, "demo-ana", "Binary/bob-scan-file")
    r = login(papp, "ana@example.org").get(f"/portal/documents/{did}/file")
    assert r.status_code == 404 and b"bob-scan-secret" not in r.data
    # a Binary without a context stays server data: no patient token sees it
    put(papp, {"resourceType": "Binary", "id": "loose", "contentType": "text/plain", "data": "bG9vc2U="})
    assert c.get("/fhir/Binary/loose", headers=bob_h).status_code == 404


# -- 2. share links render as the patient who made them ----------------------------------------------
def _share_path(c, rid: str) -> str:  # noqa: ANN001
    r = c.get(f"/portal/reports/{rid}?share=1")
    url = re.search(r'value="(http[^"]+/portal/share/[^"]+)"', r.text).group(1)
    return url.split("http://testserver", 1)[-1]


def _seed_bob_marker(app) -> None:  # noqa: ANN001
    put(app, {"resourceType": "Observation", "id": "bob-marker", "status": "final", "code": {"text": BOB_MARKER},
              "subject": {"reference": "Patient/demo-bob"}, "valueString": BOB_MARKER})


def test_share_link_shows_only_what_the_sharer_may_see(papp):
    _seed_bob_marker(papp)
    bob = login(papp, "bob@example.org")
    put(papp, {"resourceType": "DiagnosticReport", "id": "bob-marker-rep", "status": "final", "code": {"text": "Marker"},
               "subject": {"reference": "Patient/demo-bob"}, "result": [{"reference": "Observation/bob-marker"}]})
    r = papp.test_client().get(_share_path(bob, "bob-marker-rep"))
    assert r.status_code == 200 and BOB_MARKER in pdf_text(r.data)  # Bob's own link shows his value

    c, h = papp.test_client(), token(papp, "ana@example.org")
    r = c.post("/fhir/DiagnosticReport", headers=h, data=json.dumps({
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "Borrowed results"},
        "subject": {"reference": "Patient/demo-ana"},
        "result": [{"reference": "Observation/demo-ana-obs0"}, {"reference": "Observation/bob-marker"},
                   {"reference": "Observation/bob-marker/"}, {"reference": "http://testserver/fhir/Observation/bob-marker"}]}))
    assert r.status_code == 201, r.text
    rid = json.loads(r.data)["id"]
    ana = login(papp, "ana@example.org")
    page = ana.get(f"/portal/reports/{rid}")
    assert page.status_code == 200 and "Hemoglobin" in page.text and BOB_MARKER not in page.text
    assert BOB_MARKER not in pdf_text(ana.get(f"/portal/reports/{rid}.pdf").data)
    r = papp.test_client().get(_share_path(ana, rid))
    text_ = pdf_text(r.data)
    assert r.status_code == 200 and "Ana Torres" in text_ and "Hemoglobin" in text_ and BOB_MARKER not in text_
    r = c.get(f"/fhir/DiagnosticReport/{rid}/$render", headers={"Authorization": h["Authorization"]})
    assert r.status_code == 200 and BOB_MARKER not in pdf_text(r.data)


def test_share_link_of_a_closed_account_stops_working(papp):
    ana = login(papp, "ana@example.org")
    path = _share_path(ana, "demo-ana-rep")
    anon = papp.test_client()
    assert anon.get(path).status_code == 200
    r = papp.test_client().post("/fhir/Patient/demo-ana/$close", headers=token(papp, "ana@example.org"))
    assert r.status_code == 200, r.text
    r = anon.get(path)
    assert r.status_code == 410 and "Ana" not in shown_text(r.data)


def test_share_link_of_a_guardian_ends_with_the_guardianship(papp):
    carmen = login(papp, "carmen@example.org")
    path = _share_path(carmen, "demo-leo-rep")
    anon = papp.test_client()
    assert anon.get(path).status_code == 200 and "Leo Garcia" in pdf_text(anon.get(path).data)
    svc = papp.extensions["fhirserver"]
    with svc.repo.transaction() as tx:
        leo = json.loads(tx.current("Patient", "demo-leo").body)
    put(papp, {**leo, "birthDate": "2000-01-01"})  # Leo is of age: his guardian no longer sees his record
    r = anon.get(path)
    assert r.status_code == 410 and "Leo" not in shown_text(r.data)


def test_share_link_without_its_maker_is_refused(papp):
    """A link signed with the server's key but naming no user (the old form) opens nothing."""
    from portal import shares

    eng = papp.extensions["fhirserver"].repo.engine
    forged = shares._serializer(eng).dumps({"r": "demo-bob-rep", "p": "demo-bob", "t": 9e12})
    r = papp.test_client().get(f"/portal/share/{forged}")
    assert r.status_code == 410 and "Bob" not in shown_text(r.data)
    for username, patient in (("ana@example.org", "demo-bob"), ("ana@example.org", "demo-ana"),
                              ("carmen@example.org", "demo-leo"), ("carmen@example.org", "demo-bob")):
        maker = _user(papp, username)  # a link naming a user for a report they cannot see
        link = shares.share_token(eng, "demo-bob-rep", patient, maker["pk"])
        r = papp.test_client().get(f"/portal/share/{link}")
        assert r.status_code == 410 and "Bob" not in shown_text(r.data), (username, patient)
    carmen = login(papp, "carmen@example.org")
    r = carmen.get("/portal/reports/demo-bob-rep?share=1")
    assert r.status_code == 404 and "/portal/share/" not in r.text


# -- 3. every other page reads and writes as the patient ---------------------------------------------
def test_pages_of_another_patient_are_not_found(papp):
    put(papp, {"resourceType": "ImagingStudy", "id": "bob-study", "status": "available",
               "subject": {"reference": "Patient/demo-bob"}, "description": "Bob's panoramic"})
    put(papp, {"resourceType": "DiagnosticReport", "id": "bob-form-rep", "status": "final", "code": {"text": "Scan"},
               "subject": {"reference": "Patient/demo-bob"},
               "presentedForm": [{"contentType": "text/plain", "data": "Ym9iLWZvcm0=", "title": "form"}]})
    bob = login(papp, "bob@example.org")
    own = {"/portal/reports/demo-bob-rep": b"Blood panel", "/portal/reports/demo-bob-rep.pdf": b"%PDF",
           "/portal/reports/bob-form-rep/form/0": b"bob-form", "/portal/invoices/demo-bob-inv.pdf": b"%PDF",
           "/portal/imaging/bob-study": b"panoramic", "/portal/imaging/bob-study?series=x&i=-1": b"panoramic"}
    for path, needle in own.items():
        r = bob.get(path)
        assert r.status_code == 200 and needle in r.data, path
    for who in ("ana@example.org", "carmen@example.org"):
        c = login(papp, who)
        for path in own:
            r = c.get(path)
            assert r.status_code == 404 and b"Stone" not in r.data and b"bob-form" not in r.data, (who, path)
        for path in ("/portal/reports", "/portal/imaging", "/portal/invoices", "/portal/"):
            r = c.get(path)
            assert r.status_code == 200 and "demo-bob" not in r.text and "Bob" not in shown_text(r.text), (who, path)


def test_guardian_cannot_switch_to_a_non_child(papp):
    carmen = login(papp, "carmen@example.org")
    page = carmen.get("/portal/")
    assert "Leo Garcia" in page.text and "Mia Garcia" in page.text  # her children, by name
    carmen.post("/portal/switch", data={"csrf": csrf_of(page.text), "patient": "demo-mia"})
    assert carmen.get("/portal/reports/demo-mia-rep").status_code == 200
    carmen.set_cookie("fs_portal_patient", "demo-ana", path="/portal")  # a forged choice
    r = carmen.get("/portal/reports")
    assert "Ana" not in shown_text(r.text) and carmen.get("/portal/reports/demo-ana-rep").status_code == 404


def test_cancelling_a_forged_appointment_frees_no_one_elses_slot(papp):
    bob = login(papp, "bob@example.org")
    page = bob.get("/portal/appointments")
    assert bob.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "demo-slot1"}).status_code == 303
    svc = papp.extensions["fhirserver"]
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot1").body)["status"] == "busy"
    # Ana writes an Appointment of her own naming Bob's slot, then cancels it in the portal
    far = datetime.now(timezone.utc) + timedelta(days=30)
    r = papp.test_client().post("/fhir/Appointment", headers=token(papp, "ana@example.org"), data=json.dumps({
        "resourceType": "Appointment", "status": "booked", "start": far.isoformat(timespec="seconds"),
        "end": (far + timedelta(minutes=30)).isoformat(timespec="seconds"), "slot": [{"reference": "Slot/demo-slot1"}],
        "participant": [{"actor": {"reference": "Patient/demo-ana"}, "status": "accepted"}]}))
    assert r.status_code == 201, r.text
    aid = json.loads(r.data)["id"]
    ana = login(papp, "ana@example.org")
    page = ana.get("/portal/appointments")
    assert ana.post(f"/portal/appointments/{aid}/cancel", data={"csrf": csrf_of(page.text)}).status_code == 303
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot1").body)["status"] == "busy"  # still Bob's
    r = ana.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "demo-slot1"})
    assert r.status_code == 409
    # Bob's own appointment: Ana cannot cancel it; Bob can, and his slot is free again
    bob_aid = re.search(r'/portal/appointments/([^/"]+)/cancel', bob.get("/portal/appointments").text).group(1)
    assert ana.post(f"/portal/appointments/{bob_aid}/cancel", data={"csrf": csrf_of(page.text)}).status_code == 404
    page = bob.get("/portal/appointments")
    assert bob.post(f"/portal/appointments/{bob_aid}/cancel", data={"csrf": csrf_of(page.text)}).status_code == 303
    with svc.repo.transaction() as tx:
        assert json.loads(tx.current("Slot", "demo-slot1").body)["status"] == "free"


def test_booking_needs_a_slot_the_patient_may_see_and_an_online_schedule(papp):
    ana = login(papp, "ana@example.org")
    page = ana.get("/portal/appointments")
    assert "demo-slot2" in page.text and "Surgery (by phone only)" not in page.text
    for slot in ("demo-slot-closed", "no-such-slot"):
        assert ana.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": slot}).status_code == 409
    assert ana.post("/portal/appointments/book", data={"csrf": csrf_of(page.text), "slot": "demo-slot2"}).status_code == 303


def test_messages_and_sharing_stay_in_the_patients_record(papp):
    ana, bob = login(papp, "ana@example.org"), login(papp, "bob@example.org")
    page = bob.get("/portal/messages")
    assert bob.post("/portal/messages/send", data={"csrf": csrf_of(page.text), "kind": "message", "to": "demo-dr",
                                                   "subject": "Private", "text": "bob-private-question"}).status_code == 303
    assert "bob-private-question" in bob.get("/portal/messages").text
    assert "bob-private-question" not in ana.get("/portal/messages").text
    page = bob.get("/portal/sharing")
    assert bob.post("/portal/sharing/grant", data={"csrf": csrf_of(page.text), "organization": "demo-other"}).status_code == 303
    cid = re.search(r'/portal/sharing/([^/"]+)/revoke', bob.get("/portal/sharing").text).group(1)
    page = ana.get("/portal/sharing")
    assert "Harbor Orthodontics" not in page.text.split("<form", 1)[0] or cid not in page.text
    assert ana.post(f"/portal/sharing/{cid}/revoke", data={"csrf": csrf_of(page.text)}).status_code == 404
    assert f"/portal/sharing/{cid}/revoke" in bob.get("/portal/sharing").text  # still active


# -- 4. the access log lists only events the patient may see -----------------------------------------
def test_access_log_hides_events_naming_other_patients(papp):
    def event(who: str, patients: list[str]) -> dict:
        return {"resourceType": "AuditEvent", "type": {"code": "rest"}, "action": "R",
                "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"), "outcome": "0",
                "agent": [{"requestor": True, "who": {"reference": who}}], "source": {"observer": {"display": "t"}},
                "entity": [{"what": {"reference": f"Patient/{p}"}} for p in patients]}

    svc = papp.extensions["fhirserver"]
    with svc.repo.transaction(write=True) as tx:
        for rid, given in (("solo-reader", "Solo"), ("mixed-reader", "Mixed"), ("bob-reader", "Bobs")):
            # the portal's log names the reader (words, not references)
            tx.create("Practitioner", {"resourceType": "Practitioner", "id": rid,
                                       "name": [{"given": [given], "family": "Reader"}]}, res_id=rid)
        tx.create("AuditEvent", event("Practitioner/solo-reader", ["demo-ana"]))
        tx.create("AuditEvent", event("Practitioner/mixed-reader", ["demo-ana", "demo-bob"]))
        tx.create("AuditEvent", event("Practitioner/bob-reader", ["demo-bob"]))
    ana = login(papp, "ana@example.org")
    page = ana.get("/portal/access-log").text
    assert "Solo Reader viewed your record" in page
    assert "Mixed Reader" not in page and "Bobs Reader" not in page and "demo-bob" not in page
    bob = login(papp, "bob@example.org").get("/portal/access-log").text
    assert "Bobs Reader" in bob and "Mixed Reader" not in bob and "Solo Reader" not in bob
    c, h = papp.test_client(), token(papp, "ana@example.org")
    r = c.get("/fhir/AuditEvent?patient=Patient/demo-ana", headers=h)
    assert r.status_code == 200 and b"solo-reader" in r.data and b"mixed-reader" not in r.data
    r = c.get("/fhir/Patient/demo-ana/$access-log", headers=h)
    assert r.status_code == 200 and b"solo-reader" in r.data and b"mixed-reader" not in r.data
    carmen = login(papp, "carmen@example.org").get("/portal/access-log").text
    assert "Solo Reader" not in carmen and "Mixed Reader" not in carmen
