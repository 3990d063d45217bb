"""The portal in Debian's headless chromium (Playwright) against `fhirserver serve --dev` (auth on,
real gunicorn workers, the demo clinic, SMTP to an aiosmtpd server of the test): staff invite a
patient through the FHIR API, the patient activates from the email, signs in, and goes through a
report and its PDF (checked with pypdf), booking, a message answered by the clinician (a thread),
an upload, granting and revoking access; a guardian switches between two children; a questionnaire
(required items, in Spanish) and an invoice PDF; keyboard-only use and labels. A screenshot of each
page goes to tests/portal/artifacts/."""
from __future__ import annotations

import io
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

pytest.importorskip("playwright.sync_api")
from portal_helpers import ART, CHROMIUM, sign_in as _sign_in, staff_token  # noqa: E402
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")]


def _h(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}", **FHIR_JSON}


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    assert data.startswith(b"%PDF")
    return "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def _wait_mail(box, addr: str, timeout: float = 20) -> dict:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        mails = box.to(addr)
        if mails:
            return mails[-1]
        time.sleep(0.2)
    raise AssertionError(f"no email to {addr}")


def assert_labelled(page) -> None:  # noqa: ANN001
    """Every visible form control has a label, and Playwright finds the control by that label."""
    controls = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .map(e => ({id: e.id, name: e.name,
                    labels: [...(e.labels || [])].map(l => l.innerText.trim()),
                    aria: e.getAttribute('aria-label') || ''}))""")
    assert controls, page.url
    for c in controls:
        assert c["labels"] or c["aria"], f"{page.url}: control {c} has no label"
        name = c["labels"][0] if c["labels"] else c["aria"]
        found = page.get_by_label(name, exact=True)
        assert found.count() >= 1, f"{page.url}: get_by_label({name!r}) finds nothing"
        assert c["id"] in [found.nth(i).get_attribute("id") for i in range(found.count())], (page.url, c)


def test_invited_patient_journey_in_chromium(dev_server, portal_smtp, browser):  # noqa: ANN001
    root = dev_server
    tok = staff_token(root)
    # staff: a new patient of the demo clinic, a report for her, and the invitation ($invite)
    email = f"eva.{secrets.token_hex(3)}@example.org"
    r = requests.post(root + "/fhir/Patient", headers=_h(tok), timeout=30, json={
        "resourceType": "Patient", "name": [{"given": ["Eva"], "family": "Lopez"}], "birthDate": "1990-05-06",
        "managingOrganization": {"reference": "Organization/demo-clinic"},
        "telecom": [{"system": "email", "value": email}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = requests.post(root + "/fhir/Observation", headers=_h(tok), timeout=30, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "Hemoglobin"},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-01-10T09:00:00+00:00",
        "valueQuantity": {"value": 13.1, "unit": "g/dL"}})
    assert r.status_code == 201, r.text
    r = requests.post(root + "/fhir/DiagnosticReport", headers=_h(tok), timeout=30, json={
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "Blood panel"},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-01-10T09:00:00+00:00",
        "issued": "2026-01-11T09:00:00+00:00", "performer": [{"reference": "Organization/demo-clinic"}],
        "result": [{"reference": f"Observation/{r.json()['id']}"}], "conclusion": "Normal blood panel for Eva."})
    assert r.status_code == 201, r.text
    rep = r.json()["id"]
    r = requests.post(f"{root}/fhir/Patient/{pid}/$invite", headers=_h(tok), timeout=30, json={
        "resourceType": "Parameters", "parameter": [{"name": "password", "valueString": "demo-pass-1"}]})
    assert r.status_code == 200, r.text
    mail = _wait_mail(portal_smtp, email)
    link = re.search(r"https?://\S+/auth/activate\?token=\S+", mail["body"]).group(0)
    assert link.startswith(root)

    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    # first access from the email: password, mobile, security question; then the portal sign-in
    page.goto(link)
    page.screenshot(path=str(ART / "00-activate.png"), full_page=True)
    assert_labelled(page)
    page.get_by_label("New password (8 characters or more)").fill("eva-password-1")
    page.get_by_label("Mobile number").fill("+34 611 222 333")
    page.get_by_label("Security question").fill("First school?")
    page.get_by_label("Security answer").fill("Cervantes")
    page.get_by_role("button", name="Register").click()
    page.wait_for_selector("text=Your account is active")
    page.screenshot(path=str(ART / "00-activated.png"), full_page=True)
    page.get_by_role("link", name="Sign in to the patient portal").click()
    page.wait_for_selector("form")
    page.screenshot(path=str(ART / "01-login.png"))
    assert_labelled(page)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("eva-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("h1")
    assert "Eva" in page.content()
    page.screenshot(path=str(ART / "02-home.png"))
    # a report and its PDF
    page.goto(f"{root}/portal/reports/{rep}")
    page.screenshot(path=str(ART / "03-report.png"), full_page=True)
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download PDF").first.click()
    assert "Eva Lopez" in _pdf_text(Path(dl.value.path()).read_bytes())
    # booking
    page.goto(root + "/portal/appointments")
    assert_labelled(page)
    page.locator("input[name=slot]").first.check()
    page.get_by_role("button", name="Book", exact=True).click()
    page.wait_for_selector(".flash")
    page.screenshot(path=str(ART / "04-booked.png"), full_page=True)
    # a message, and the clinician's answer (a Communication with inResponseTo) under it
    page.goto(root + "/portal/messages")
    assert_labelled(page)
    page.get_by_label("To", exact=True).select_option("demo-dr")
    page.get_by_label("Subject", exact=True).fill("Fasting")
    page.get_by_label("Message", exact=True).fill("Must I fast before the test?")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector(".flash")
    page.screenshot(path=str(ART / "05-messages.png"), full_page=True)
    assert _wait_mail(portal_smtp, "dr.moreno@clinic.example")["subject"] == "New secure message from a patient"
    found = requests.get(f"{root}/fhir/Communication?subject=Patient/{pid}", headers=_h(tok), timeout=30).json()
    [question] = [e["resource"] for e in found.get("entry", [])]
    r = requests.post(root + "/fhir/Communication", headers=_h(tok), timeout=30, json={
        "resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{pid}"},
        "inResponseTo": [{"reference": f"Communication/{question['id']}"}], "sent": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sender": {"reference": "Practitioner/demo-dr"}, "recipient": [{"reference": f"Patient/{pid}"}],
        "payload": [{"contentString": "Yes, eight hours without food."}]})
    assert r.status_code == 201, r.text
    page.goto(root + "/portal/messages")
    thread = page.locator(f"#thread-{question['id']}")
    assert "Must I fast before the test?" in thread.inner_text()
    reply = thread.locator(".replies .reply")
    assert reply.count() == 1 and "Yes, eight hours without food." in reply.inner_text()
    assert "Lucia Moreno" in reply.inner_text()
    assert page.locator(".msgs > li").count() == 1  # the answer is not a thread of its own
    page.screenshot(path=str(ART / "05b-thread.png"), full_page=True)
    # upload
    page.goto(root + "/portal/documents")
    assert_labelled(page)
    page.get_by_label("File").set_input_files({"name": "note.txt", "mimeType": "text/plain", "buffer": b"hello clinic"})
    page.get_by_label("Description").fill("Note for the clinic")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector(".flash")
    page.screenshot(path=str(ART / "06-documents.png"), full_page=True)
    # granting and revoking access
    page.goto(root + "/portal/sharing")
    assert_labelled(page)
    page.get_by_label("Organization").select_option("demo-other")
    page.get_by_role("button", name="Grant access").click()
    page.wait_for_selector("text=Harbor Orthodontics")
    page.screenshot(path=str(ART / "07-shared.png"), full_page=True)
    page.get_by_role("button", name="Revoke").first.click()
    page.wait_for_selector("text=No one else has access.")
    page.screenshot(path=str(ART / "08-revoked.png"), full_page=True)
    page.goto(root + "/portal/dev/mail")
    assert "dr.moreno@clinic.example" in page.content()
    page.screenshot(path=str(ART / "09-mail.png"), full_page=True)


def test_guardian_switches_children_in_chromium(dev_server, browser):  # noqa: ANN001
    root = dev_server
    page = browser.new_page(viewport={"width": 390, "height": 844})
    _sign_in(page, root, "carmen@example.org")
    assert_labelled(page)
    seen = {}
    for kid, name, other in (("demo-mia", "Mia", "Leo"), ("demo-leo", "Leo", "Mia")):
        page.get_by_label("Acting for").select_option(kid)
        page.get_by_role("button", name="Switch").click()
        page.wait_for_selector("nav")
        assert page.get_by_label("Acting for").input_value() == kid
        page.goto(root + "/portal/reports")
        page.screenshot(path=str(ART / f"10-guardian-{name.lower()}.png"), full_page=True)
        links = page.locator("main a[href*='/portal/reports/']").evaluate_all("els => els.map(e => e.href)")
        assert any(h.endswith(f"/{kid}-rep") for h in links), links
        assert not any(f"demo-{other.lower()}-rep" in h for h in links), links
        page.goto(f"{root}/portal/reports/{kid}-rep")
        assert f"Normal blood panel for {name}." in page.locator("main").inner_text()
        page.goto(f"{root}/portal/reports/demo-ana-rep")  # not a child of hers
        assert "Normal blood panel for Ana." not in page.content()
        page.goto(root + "/portal/invoices")
        seen[kid] = page.locator("main").inner_text()
        assert f"{kid}-inv" in seen[kid]
    assert "demo-leo-inv" not in seen["demo-mia"] and "demo-mia-inv" not in seen["demo-leo"]


def test_questionnaire_and_invoice_in_chromium(dev_server, browser):  # noqa: ANN001
    root = dev_server
    page = browser.new_page(viewport={"width": 390, "height": 844})
    _sign_in(page, root, "bob@example.org")
    # the user's language: Spanish (kept in Patient.communication)
    page.get_by_label("Language").select_option("es")
    page.get_by_role("button", name="OK").click()
    page.wait_for_selector("html[lang=es]")
    page.goto(root + "/portal/questionnaires")
    page.get_by_role("link", name="Completar").first.click()
    page.wait_for_selector("form")
    assert_labelled(page)
    page.get_by_label("Which medicines do you take?").fill("Ibuprofeno 400")
    page.get_by_label("Some", exact=True).check()
    page.get_by_role("button", name="Enviar respuestas").click()  # two required answers missing
    page.wait_for_selector(".error-summary")
    page.screenshot(path=str(ART / "11-questionnaire-errors.png"), full_page=True)
    assert page.locator("#e-allergies").inner_text() == "Esta respuesta es obligatoria."
    assert page.locator("#e-smoke").inner_text() == "Esta respuesta es obligatoria."
    assert page.get_by_label("Which medicines do you take?").input_value() == "Ibuprofeno 400"  # nothing lost
    assert page.get_by_label("Some", exact=True).is_checked()
    page.get_by_label("No", exact=True).check()
    page.get_by_label("Cigarettes per day").fill("0")
    page.get_by_role("button", name="Enviar respuestas").click()
    page.wait_for_selector("text=Gracias, sus respuestas se guardaron.")
    page.screenshot(path=str(ART / "12-questionnaire-saved.png"), full_page=True)
    # an invoice and its PDF
    page.goto(root + "/portal/invoices")
    page.screenshot(path=str(ART / "13-invoices.png"), full_page=True)
    with page.expect_download() as dl:
        page.get_by_role("link", name="Descargar PDF").first.click()
    text = _pdf_text(Path(dl.value.path()).read_bytes())
    assert "Bob Stone" in text and "45" in text


def test_keyboard_only_and_labels_in_chromium(dev_server, browser):  # noqa: ANN001
    root = dev_server
    page = browser.new_page(viewport={"width": 1024, "height": 800})
    page.goto(root + "/portal/login")

    def tab_to(selector: str, limit: int = 60) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reaches {selector} on {page.url}")

    # sign in with the keyboard only
    tab_to("input[type=email], input[name=username], input[name=email]")
    page.keyboard.type("ana@example.org")
    tab_to("input[type=password]")
    page.keyboard.type("demo-pass-1")
    page.keyboard.press("Enter")
    page.wait_for_selector("nav")
    # a note to the record: Tab to the field, type, Tab to its button, Enter
    page.goto(root + "/portal/messages")
    tab_to("#f-note")
    page.keyboard.type("Typed with the keyboard only")
    tab_to("button")
    assert page.evaluate("() => document.activeElement.textContent") == "Save note"
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash")
    assert "Typed with the keyboard only" in page.locator("main").inner_text()
    page.screenshot(path=str(ART / "14-keyboard-note.png"), full_page=True)
    # every control of every page has a label
    for path in ("/portal/", "/portal/reports", "/portal/appointments", "/portal/documents", "/portal/messages",
                 "/portal/invoices", "/portal/questionnaires", "/portal/questionnaires/demo-q", "/portal/sharing",
                 "/portal/access-log", "/portal/profile", "/portal/imaging"):
        r = page.goto(root + path)
        assert r.status == 200, path
        assert_labelled(page)
