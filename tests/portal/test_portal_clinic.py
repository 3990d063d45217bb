"""The portal finished for patients: the clinic (name, logo, address, tax id, time zone from
Settings) in the header, the OAuth pages, the invoice PDF and the invitation email; times in the
clinic's zone; status codes and amounts in English and Spanish; the access log in words without
the patient's own views; the clinician's reply in the message thread."""
from __future__ import annotations

import io
import re

import pytest

from portal.clinic import format_money, format_when, invoice_number
from portal_helpers import admin_token, csrf_of, login
from tests.conftest import app_fixture

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.fixture(scope="session")
def clinic_logo(tmp_path_factory):  # noqa: ANN001, ANN201
    p = tmp_path_factory.mktemp("clinic") / "logo.png"
    p.write_bytes(PNG)
    return p


@pytest.fixture(scope="module")
def clinic_session_app(settings, session_app, portal_smtp, clinic_logo, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(
        insecure_no_auth=False, smtp_url=portal_smtp.url, clinic_name="Sunrise Dental & Imaging Clinic",
        clinic_timezone="Europe/Madrid", clinic_address="Calle Mayor 1, 28013 Madrid", clinic_tax_id="ES-B12345678",
        clinic_logo=str(clinic_logo)), open_apps)


@pytest.fixture()
def capp(clinic_session_app, papp):  # noqa: ANN001, ANN201
    """The clinic-branded app on the database `papp` just emptied and seeded."""
    return clinic_session_app


def _put(app, tok: str, body: dict) -> None:  # noqa: ANN001
    c = app.test_client()
    r = c.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body,
              headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"})
    assert r.status_code in (200, 201), r.text


def test_formatting_units():
    import zoneinfo

    madrid = zoneinfo.ZoneInfo("Europe/Madrid")
    assert format_when("2026-01-10T09:00:00+00:00", "en", madrid) == "10 Jan 2026, 10:00 CET"
    assert format_when("2026-07-10T09:00:00Z", "es", madrid) == "10 jul 2026, 11:00 CEST"
    assert format_when("2026-01-10", "es", madrid) == "10 ene 2026"  # a date stays the date it names
    assert format_when("2026-01-09T23:30:00Z", "en", madrid, date_only=True) == "10 Jan 2026"
    assert format_money({"value": 1234.5, "currency": "EUR"}, "en") == "€1,234.50"
    assert format_money({"value": 1234.5, "currency": "EUR"}, "es") == "1.234,50 €"
    assert invoice_number({"id": "x", "identifier": [{"value": "F-2026-0007"}]}) == "F-2026-0007"


def test_header_times_statuses_and_invoice_in_both_languages(capp):  # noqa: ANN001
    tok = admin_token(capp)
    _put(capp, tok, {"resourceType": "Appointment", "id": "ana-appt-tz", "status": "booked",
                     "start": "2030-01-10T09:00:00+00:00", "end": "2030-01-10T09:30:00+00:00",
                     "participant": [{"actor": {"reference": "Patient/demo-ana"}, "status": "accepted"}]})
    _put(capp, tok, {"resourceType": "Invoice", "id": "demo-ana-inv", "status": "balanced",
                     "identifier": [{"system": "urn:clinic:invoice", "value": "F-2026-0007"}],
                     "subject": {"reference": "Patient/demo-ana"}, "issuer": {"reference": "Organization/demo-clinic"},
                     "date": "2026-02-01T10:00:00+00:00",
                     "lineItem": [{"sequence": 1, "chargeItemCodeableConcept": {"text": "Implant"},
                                   "priceComponent": [{"type": "base", "amount": {"value": 1234.5, "currency": "EUR"}}]}],
                     "totalGross": {"value": 1234.5, "currency": "EUR"}})
    c = login(capp)
    home = c.get("/portal/").text
    assert "Sunrise Dental &amp; Imaging Clinic" in home and 'src="/portal/logo"' in home
    logo = c.get("/portal/logo")
    assert logo.status_code == 200 and logo.data == PNG and logo.mimetype == "image/png"
    appts = c.get("/portal/appointments").text
    assert "10 Jan 2030, 10:00 CET" in appts and "Booked" in appts  # 09:00 UTC is 10:00 in Madrid
    inv = c.get("/portal/invoices").text
    assert "F-2026-0007" in inv and "€1,234.50" in inv and "Paid" in inv and "balanced" not in inv
    pdf = c.get("/portal/invoices/demo-ana-inv.pdf")
    assert pdf.status_code == 200
    from pypdf import PdfReader

    txt = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    for want in ("Sunrise Dental & Imaging Clinic", "Calle Mayor 1, 28013 Madrid", "ES-B12345678", "F-2026-0007",
                 "€1,234.50", "Paid", "1 Feb 2026"):
        assert want in txt, (want, txt)
    # in Spanish
    c.post("/portal/lang", data={"lang": "es", "csrf": csrf_of(home), "next": "/portal/appointments"})
    appts = c.get("/portal/appointments").text
    assert "10 ene 2030, 10:00 CET" in appts and "Reservada" in appts
    inv = c.get("/portal/invoices").text
    assert "1.234,50 €" in inv and "Pagada" in inv and "N.º de factura" in inv
    txt = "".join(p.extract_text() for p in PdfReader(io.BytesIO(c.get("/portal/invoices/demo-ana-inv.pdf").data)).pages)
    assert "1.234,50 €" in txt and "NIF/CIF: ES-B12345678" in txt and "Pagada" in txt


def test_oauth_pages_show_the_clinic(capp):  # noqa: ANN001
    c = capp.test_client()
    r = c.get("/auth/authorize?response_type=code&client_id=demo-staff-app&redirect_uri=http://127.0.0.1/cb"
              "&scope=openid&state=s&aud=http://testserver/fhir&code_challenge=" + "a" * 43
              + "&code_challenge_method=S256")
    assert r.status_code == 200, r.text[:500]
    assert "Sunrise Dental &amp; Imaging Clinic" in r.text and 'src="/portal/logo"' in r.text
    assert "Sunrise Dental &amp; Imaging Clinic" in c.get("/portal/login").text


def test_invitation_email_names_the_clinic(capp, portal_smtp):  # noqa: ANN001
    import time

    tok = admin_token(capp)
    c = capp.test_client()
    r = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"given": ["Eva"], "family": "Lopez"}],
                                      "managingOrganization": {"reference": "Organization/demo-clinic"},
                                      "telecom": [{"system": "email", "value": "eva.clinic@example.org"}]},
               headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 201, r.text
    r = c.post(f"/fhir/Patient/{r.get_json()['id']}/$invite", json={"resourceType": "Parameters", "parameter": [
        {"name": "password", "valueString": "admin-pass-1"}]},
               headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    deadline = time.time() + 20
    while not portal_smtp.to("eva.clinic@example.org") and time.time() < deadline:
        time.sleep(0.2)
    mail = portal_smtp.to("eva.clinic@example.org")[-1]
    assert "Sunrise Dental & Imaging Clinic" in " ".join(mail["subject"].split())  # unfolded
    assert "Sunrise Dental & Imaging Clinic created a profile for you" in mail["body"]


def test_access_log_in_words_without_own_views_and_clinician_reply(capp):  # noqa: ANN001
    services = capp.extensions["fhirserver"]
    tok = admin_token(capp)
    c = login(capp)
    assert c.get("/portal/reports").status_code == 200  # her own views: not in the log
    # Dr. Moreno reads Ana's report (an audited read by the practitioner)
    with capp.test_request_context("/"):
        services.audit.record(who={"reference": "Practitioner/demo-dr", "client_id": "demo-staff-app"}, action="R",
                              interaction="read", references=["DiagnosticReport/demo-ana-rep"])
        services.audit.flush()
    # a message from Ana and the clinician's reply to it
    _put(capp, tok, {"resourceType": "Communication", "id": "ana-msg", "status": "completed",
                     "subject": {"reference": "Patient/demo-ana"}, "sent": "2026-03-01T08:00:00Z",
                     "sender": {"reference": "Patient/demo-ana"}, "recipient": [{"reference": "Practitioner/demo-dr"}],
                     "topic": {"text": "Tooth ache"}, "payload": [{"contentString": "It hurts since Monday."}]})
    _put(capp, tok, {"resourceType": "Communication", "id": "ana-msg-reply", "status": "completed",
                     "subject": {"reference": "Patient/demo-ana"}, "sent": "2026-03-01T09:15:00Z",
                     "inResponseTo": [{"reference": "Communication/ana-msg"}],
                     "sender": {"reference": "Practitioner/demo-dr"}, "recipient": [{"reference": "Patient/demo-ana"}],
                     "payload": [{"contentString": "Come on Thursday at 10."}]})
    with capp.test_request_context("/"):
        services.audit.flush()
    log = c.get("/portal/access-log").text
    items = re.findall(r'<li><span class="what">([^<]*)</span><time datetime="[^"]*">([^<]*)</time>', log)
    assert items, log[-2000:]
    texts = [t for t, _w in items]
    assert "Dr. Lucia Moreno viewed your reports" in texts, texts
    assert all("Ana Torres" not in t and not t.startswith("You") for t in texts), texts  # her own views left out
    assert all(re.search(r"\d{1,2} \w{3} \d{4}, \d\d:\d\d CES?T", w) for _t, w in items), items
    assert "Patient/" not in log and "Practitioner/" not in log  # words, not references
    msgs = c.get("/portal/messages").text
    thread = msgs[msgs.index('id="thread-ana-msg"'):]
    assert "Come on Thursday at 10." in thread and "Dr. Lucia Moreno" in thread
    assert "1 Mar 2026, 10:15 CET" in thread  # the reply's time in the clinic's zone
