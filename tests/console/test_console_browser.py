"""The console in Debian's headless chromium (Playwright) against `fhirserver serve` (auth on,
real gunicorn workers, its DICOM node, SMTP to an aiosmtpd server of the test), as staff of two
organizations: Dr. Moreno (the demo clinic) and Dr. Ruiz (Harbor Orthodontics). Each item of the
console is driven by the accessible names staff see; after the same action succeeds on its own
data, the other organization's staff get nothing. Screenshots go to tmp/artifacts/console/."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from sqlalchemy import create_engine, text

from console_dicom import Scanners, ct, free_port
from console_helpers import HARBOR_STAFF, put, seed_two_orgs
from live_helpers import wait_for

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ART = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "console"
STAFF = "staff@clinic.example"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")]
RESET = ("resource_history", "resource", "auth_token", "auth_code", "auth_session", "auth_user", "auth_failure",
         "lifecycle_invitation", "lifecycle_account", "lifecycle_email", "lifecycle_access_request", "notify_outbox",
         "dicom_instance", "dicom_series", "dicom_study", "dicom_node")


def _seed(app: Any) -> None:
    """Both organizations, a report the clinic filed without a patient, and the two modalities."""
    from dicom.nodes import add_node

    eng = app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in RESET:
            c.execute(text(f"DELETE FROM {t}"))
    seed_two_orgs(app)
    put(app, {"resourceType": "DiagnosticReport", "id": "kw-report", "status": "final",
              "meta": {"tag": [{"system": "urn:fhirserver:owner", "code": "demo-clinic"}]},
              "code": {"text": "VR session green-falcon"}, "conclusion": "Range of motion improved."})
    add_node(eng, "CLINIC", "127.0.0.1", free_port(), organization="demo-clinic")
    add_node(eng, "HARBOR", "127.0.0.1", free_port(), organization="demo-other")


@pytest.fixture(scope="module")
def server(console_session_app, database_url, console_smtp, tmp_path_factory):  # noqa: ANN001, ANN201
    """`fhirserver serve` on a database seeded here. On SQLite the server gets a file of its own
    (a second multi-process server must not share the test worker's file); PostgreSQL is shared."""
    from tests.conftest import built_app

    tmp = tmp_path_factory.mktemp("console-live")
    admin = None
    if database_url.startswith("postgres"):
        # a database of its own: tests of other modules on this worker empty the shared one
        head, _, name = database_url.rpartition("/")
        live = f"{name}_console_live"
        admin = create_engine(head.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{live}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{live}"'))
        url = f"{head}/{live}"
    else:
        url = f"sqlite:///{tmp / 'console.sqlite3'}"
    with built_app(console_session_app.extensions["fhirserver"].settings.replace(database_url=url),
                   upgrade_schema=True) as seeder:
        _seed(seeder)
    port, dport = free_port(), free_port()
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=url, FHIRSERVER_DATA_DIR=str(tmp), FHIRSERVER_SMTP_URL=console_smtp.url)
    log_path = tmp / "server.log"  # a file, not a pipe: an unread pipe fills up and blocks the server
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(port), "--workers", "2",
                                 "--dicom-port", str(dport), "--dicom-ae", "FHIRSERVER"], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
            try:
                if requests.get(root + "/console/login", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet
                time.sleep(0.3)
        wait_for(lambda: _listening(dport), 60, interval=0.3)  # the DICOM node starts apart from HTTP
        yield {"root": root, "scanners": Scanners(dport, tmp / "dcm"), "smtp": console_smtp}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{live}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    ART.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, phone: bool = False) -> Any:
    ctx = browser.new_context(viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30000)
    return page


def sign_in(page: Any, root: str, email: str, path: str = "/console/") -> None:
    page.goto(root + path)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("demo-pass-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("nav")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ART / f"{name}.png"), full_page=True)


def poll(fn: Callable[[], Any], timeout: float = 60) -> Any:
    """`wait_for` at a browser's pace (each try may load a page)."""
    return wait_for(fn, timeout, interval=0.3)


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    page.wait_for_load_state()


def main_text(page: Any) -> str:
    return page.locator("main").inner_text()


def open_patient(page: Any, root: str, query: str, name: str) -> None:
    page.goto(root + "/console/patients")
    page.get_by_label("Search patients").fill(query)
    page.get_by_label("Search patients").press("Enter")
    page.get_by_role("link", name=name).first.click()
    # the list page has an h1 too: wait for the patient's own URL, not any heading
    page.wait_for_url(re.compile(r"/console/patients/[^/?]+$"))
    page.wait_for_selector("h1")


def assert_labelled(page: Any) -> None:
    """Every visible form control has a label Playwright finds it by."""
    controls = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .map(e => ({id: e.id, labels: [...(e.labels || [])].map(l => l.innerText.trim())}))""")
    for c in controls:
        assert c["labels"] and c["id"], f"{page.url}: control {c} has no label"


# -- 1. patient list -------------------------------------------------------------------------------
def test_patient_list_filters_and_isolation(server, browser):  # noqa: ANN001
    root = server["root"]
    page = _page(browser)
    sign_in(page, root, STAFF)
    assert page.get_by_role("heading", name="Patients").is_visible()
    for name in ("Patients", "Reports", "Unmatched studies", "Messages"):
        assert page.get_by_role("navigation").get_by_role("link", name=name, exact=True).is_visible()
    assert_labelled(page)
    page.get_by_label("Search patients").fill("Torres")
    page.get_by_role("button", name="Filter").click()
    assert "Ana Torres" in main_text(page) and "Eva Torres" not in main_text(page)
    page.goto(root + "/console/patients")
    page.get_by_label("Gender").select_option("female")
    page.get_by_label("Visit date from").fill("2000-01-01")
    page.get_by_label("Visit date to").fill("2000-01-31")
    page.get_by_role("button", name="Filter").click()
    assert "No patients found." in main_text(page)
    assert page.get_by_label("Visit date from").input_value() == "2000-01-01"
    page.goto(root + "/console/patients")
    shot(page, "01-patients")
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    other.get_by_label("Search patients").fill("Torres")
    other.get_by_label("Search patients").press("Enter")
    assert "Eva Torres" in main_text(other) and "Ana Torres" not in main_text(other)
    shot(other, "01-patients-harbor")
    # Spanish, phone width
    phone = _page(browser, phone=True)
    sign_in(phone, root, STAFF)
    phone.get_by_label("Language").select_option("es")
    phone.get_by_role("button", name="OK").click()
    assert phone.get_by_label("Buscar pacientes").is_visible()
    assert phone.get_by_role("link", name="Estudios sin asignar").is_visible()
    shot(phone, "01-patients-es-phone")


# -- 2. new patient ----------------------------------------------------------------------------------
def test_new_patient_alias_exists_and_invitation(server, browser):  # noqa: ANN001
    root, smtp = server["root"], server["smtp"]
    page = _page(browser)
    sign_in(page, root, STAFF)
    page.get_by_role("button", name="New patient").click()
    assert_labelled(page)
    page.get_by_label("First name").fill("Julia")
    page.get_by_label("Email").fill("julia.browser@example.org")
    page.get_by_role("button", name="Create").click()
    assert "Enter a last name." in main_text(page)
    assert page.get_by_label("First name").input_value() == "Julia"  # kept
    shot(page, "02-new-patient-errors")
    page.get_by_label("Last name").fill("Campos")
    page.get_by_label("Date of birth").fill("1988-07-09")
    page.get_by_label("Gender").select_option("female")
    page.get_by_label("Send invitation").check()
    page.get_by_label("Your password (confirms the invitation)").fill("demo-pass-1")
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("text=The patient was created.")
    assert page.get_by_role("heading", name="Julia Campos").is_visible()
    new_url = page.url
    poll(lambda: smtp.to("julia.browser@example.org"))
    shot(page, "02-new-patient-created")
    # alias
    page.goto(root + "/console/patients/new")
    page.get_by_label("Alias (no personal data)").check()
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("text=The patient was created.")
    assert page.locator("h1").inner_text().startswith("ALIAS-")
    # an email of the other organization's patient: exists, whose is not said
    page.goto(root + "/console/patients/new")
    page.get_by_label("First name").fill("Someone")
    page.get_by_label("Last name").fill("Else")
    page.get_by_label("Email").fill("eva@harbor-patients.example")
    page.get_by_role("button", name="Create").click()
    body = main_text(page)
    assert "already exists" in body and "Eva" not in body
    shot(page, "02-new-patient-exists")
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    other.goto(new_url)
    assert "Julia Campos" not in other.content()


# -- 3. patient detail -------------------------------------------------------------------------------
def test_patient_detail_edit_report_pdf_tags(server, browser):  # noqa: ANN001
    root = server["root"]
    page = _page(browser)
    sign_in(page, root, STAFF)
    open_patient(page, root, "Stone", "Bob Stone")
    pid_url = page.url
    for h in ("Demographics", "Records", "Images", "Reports", "Documents", "Tags", "Sharing", "Access log"):
        assert page.get_by_role("heading", name=h, exact=True).is_visible()
    page.get_by_role("button", name="Edit", exact=True).click()
    page.get_by_label("Mobile phone").fill("+34 600 555 444")
    page.get_by_label("ID number").fill("ID-99887766")
    page.get_by_label("Medical insurance card number").fill("INS-5544")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=The patient was saved.")
    assert "ID-99887766" in main_text(page) and "INS-5544" in main_text(page)
    page.get_by_label("New tag").fill("Implant plan")
    page.get_by_role("button", name="Add tag").click()
    page.wait_for_selector("text=The tag was added.")
    assert "Implant plan" in main_text(page)
    page.get_by_role("link", name="View").first.click()
    assert "Normal blood panel for Bob." in main_text(page)
    pdf = page.request.get(root + page.get_by_role("link", name="PDF").get_attribute("href"))
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    page.goto(pid_url)
    shot(page, "03-patient-detail")
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    r = other.goto(pid_url)
    assert r.status == 404 and "Bob Stone" not in other.content()


# -- 4. scan tickets ---------------------------------------------------------------------------------
def test_scan_ticket_worklist_and_completion(server, browser):  # noqa: ANN001
    root, sc = server["root"], server["scanners"]
    page = _page(browser)
    sign_in(page, root, STAFF)
    open_patient(page, root, "Torres", "Ana Torres")
    page.get_by_role("button", name="Create scan ticket").click()
    assert_labelled(page)
    page.get_by_label("CBCT").check()
    page.get_by_label("Case type").select_option("implant")
    page.get_by_label("Visit type").select_option("first")
    page.get_by_label("Doctor").select_option("demo-dr")
    shot(page, "04-scan-ticket-form")
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("text=The scan ticket was created.")
    acc = re.search(r"\((ST[0-9A-F]+)\)", main_text(page)).group(1)
    items = {d.AccessionNumber: d for d in sc.worklist("CLINIC")}
    assert acc in items
    assert acc not in {d.AccessionNumber for d in sc.worklist("HARBOR")}
    uid = "1.2.826.0.1.3680043.8.498.4401"
    sc.store("CLINIC", ct(patient_id=str(items[acc].PatientID), patient_name=str(items[acc].PatientName),
                          study_uid=uid, accession=acc))

    ticket_url = page.url

    def done() -> bool:
        page.goto(ticket_url)
        return f"/viewer/?study={uid}" in page.content()
    poll(done)
    assert acc not in {d.AccessionNumber for d in sc.worklist("CLINIC")}  # completed
    shot(page, "04-scan-ticket-completed")


# -- 5. merge ----------------------------------------------------------------------------------------
def test_merge_preview_confirm_then_new_scans_land_on_target(server, browser):  # noqa: ANN001
    root, sc = server["root"], server["scanners"]
    sc.store("CLINIC", ct(patient_id="BRW-DUP", patient_name="Garcia^Mia", study_uid="1.2.826.0.1.3680043.8.498.5501"))
    page = _page(browser)
    sign_in(page, root, STAFF)
    open_patient(page, root, "Mia", "Mia Garcia")
    target_url = page.url
    page.get_by_role("button", name="Merge patients").click()
    page.wait_for_url(re.compile(r"/merge\??$"))
    merge_url = page.url

    def dup_listed() -> bool:
        page.goto(merge_url)  # reload() can race a navigation still in flight
        return page.get_by_role("checkbox").count() > 0 and "BRW" not in page.url
    poll(dup_listed)
    page.get_by_label("Name or contact").fill("Garcia")
    page.get_by_role("button", name="Find").click()
    boxes = page.get_by_role("checkbox")
    for i in range(boxes.count()):
        if "Leo" not in (boxes.nth(i).get_attribute("id") or "") and "demo-leo" != boxes.nth(i).get_attribute("value"):
            boxes.nth(i).check()
    page.get_by_role("button", name="Preview").click()
    assert "ImagingStudy/" in main_text(page)
    shot(page, "05-merge-preview")
    page.get_by_role("button", name="Confirm merge").click()
    page.wait_for_selector("text=The patients were merged.")
    uid2 = "1.2.826.0.1.3680043.8.498.5502"
    sc.store("CLINIC", ct(patient_id="BRW-DUP", patient_name="Garcia^Mia", study_uid=uid2))

    def landed() -> bool:
        page.goto(target_url)
        return f"/viewer/?study={uid2}" in page.content()
    poll(landed)
    shot(page, "05-merge-done")
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    assert other.goto(target_url + "/merge").status == 404


# -- 6. unmatched studies ------------------------------------------------------------------------------
def test_unmatched_study_attached_to_patient(server, browser):  # noqa: ANN001
    root, sc = server["root"], server["scanners"]
    sc.store("CLINIC", ct(patient_id="BRW-UNK", patient_name="Nadie^Luis", study_uid="1.2.826.0.1.3680043.8.498.6601"))
    sc.store("HARBOR", ct(patient_id="BRW-HRB", patient_name="Otro^Raul", study_uid="1.2.826.0.1.3680043.8.498.6602"))
    page = _page(browser)
    sign_in(page, root, STAFF)

    def listed() -> bool:
        page.goto(root + "/console/unmatched")
        return "BRW-UNK" in main_text(page)
    poll(listed)
    assert "BRW-HRB" not in main_text(page)
    shot(page, "06-unmatched")
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    nav(other, "Unmatched studies")
    assert "BRW-UNK" not in main_text(other)
    row = page.get_by_role("row").filter(has_text="BRW-UNK")
    row.get_by_role("button", name="Attach to patient").click()
    page.wait_for_url(re.compile(r"/console/unmatched/[^/?]+\??$"))
    attach_url = page.url
    page.get_by_label("Search patients").fill("Stone")
    page.get_by_role("button", name="Search").click()
    page.get_by_label(re.compile("Bob Stone")).check()
    page.get_by_role("button", name="Attach to patient").click()
    page.wait_for_selector("text=The study was attached.")
    assert page.get_by_role("heading", name="Bob Stone").is_visible()
    assert "/viewer/?study=1.2.826.0.1.3680043.8.498.6601" in page.content()
    shot(page, "06-unmatched-attached")
    assert other.goto(attach_url).status == 404


# -- 7. reports ----------------------------------------------------------------------------------------
def test_report_found_by_keywords_and_attached(server, browser):  # noqa: ANN001
    root = server["root"]
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    nav(other, "Reports")
    other.get_by_label("Keywords").fill("green-falcon")
    other.get_by_role("button", name="Search").click()
    assert "green-falcon" not in main_text(other)
    page = _page(browser)
    sign_in(page, root, STAFF)
    nav(page, "Reports")
    page.get_by_label("Keywords").fill("green-falcon")
    page.get_by_role("button", name="Search").click()
    assert "VR session green-falcon" in main_text(page)
    shot(page, "07-reports")
    page.get_by_role("button", name="Attach to patient").click()
    page.get_by_label("Search patients").fill("Leo")
    page.get_by_role("button", name="Search").click()
    page.get_by_label(re.compile("Leo Garcia")).check()
    page.get_by_role("button", name="Attach to patient").click()
    page.wait_for_selector("text=The report was attached.")
    assert "VR session green-falcon" in main_text(page)
    shot(page, "07-report-attached")


# -- 8. messages ---------------------------------------------------------------------------------------
def test_message_notice_links_to_the_console_thread(server, browser):  # noqa: ANN001
    root, smtp = server["root"], server["smtp"]
    ana = _page(browser)
    ana.goto(root + "/portal/login")
    ana.get_by_label("Email").fill("ana@example.org")
    ana.get_by_label("Password").fill("demo-pass-1")
    ana.get_by_role("button", name="Sign in").click()
    ana.goto(root + "/portal/messages")
    ana.get_by_label("To", exact=True).select_option("demo-dr")
    ana.get_by_label("Subject", exact=True).fill("Aligner question")
    ana.get_by_label("Message", exact=True).fill("Can I drink coffee with aligners?")
    ana.get_by_role("button", name="Send").click()
    mail = poll(lambda: smtp.to("dr.moreno@clinic.example"))[-1]
    link = re.search(r"(http://127\.0\.0\.1:\d+/console/messages/\S+)", mail["body"]).group(1)
    assert "coffee" not in mail["body"]
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    assert other.goto(link).status == 404
    nav(other, "Messages")
    assert "Aligner question" not in main_text(other)
    page = _page(browser)
    page.goto(link)  # the email's link: sign in first, then the thread
    page.get_by_label("Email").fill(STAFF)
    page.get_by_label("Password").fill("demo-pass-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("text=Can I drink coffee with aligners?")
    page.get_by_label("Reply").fill("Take them out first, then brush.")
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_selector("text=Your reply was sent.")
    shot(page, "08-thread")
    nav(page, "Messages")
    assert "Aligner question" in main_text(page)
    ana.goto(root + "/portal/messages")
    assert "Take them out first, then brush." in ana.content()


# -- the patient page's notes, meetings, new report, QR, access requests, reactivate ------------------
def test_patient_page_notes_meetings_new_report_qr_and_reactivate(server, browser):  # noqa: ANN001
    root = server["root"]
    page = _page(browser)
    sign_in(page, root, STAFF)
    open_patient(page, root, "Torres", "Ana Torres")
    ana_url = page.url
    page.get_by_label("New note").fill("Allergic to latex gloves.")
    page.get_by_role("button", name="Save note").click()
    page.wait_for_selector("text=The note was saved.")
    assert "Allergic to latex gloves." in page.locator("section", has=page.get_by_role("heading", name="Notes")).inner_text()
    # a meeting list, the patient on it, seen from the meeting
    nav(page, "Meetings")
    page.get_by_label("Meeting name").fill("Implant board")
    page.get_by_label("Meeting date").fill("2031-03-04T10:00")
    page.get_by_role("button", name="Create meeting").click()
    page.wait_for_selector("text=The meeting was created.")
    page.goto(ana_url)
    page.get_by_label("Meeting", exact=True).select_option(label="Implant board · 2031-03-04")
    page.get_by_role("button", name="Add to meeting").click()
    page.wait_for_selector("text=The patient was added to the meeting.")
    page.get_by_role("link", name="Implant board").click()
    assert page.get_by_role("link", name="Ana Torres").is_visible()
    shot(page, "03b-meeting")
    # a new report from two chosen observations
    page.goto(ana_url)
    page.get_by_role("button", name="New report").click()
    assert_labelled(page)
    page.get_by_label(re.compile("Hemoglobin")).check()
    page.get_by_label(re.compile("Glucose")).check()
    page.get_by_label("Report title").fill("Control panel")
    page.get_by_label("Conclusion").fill("Values in range.")
    page.get_by_role("button", name="Create report").click()
    page.wait_for_selector("text=The report was created.")
    assert "Hemoglobin" in main_text(page) and "Values in range." in main_text(page)
    # its QR code opens the share link's PDF
    qr = page.locator("#qr svg")
    assert qr.is_visible()
    link = page.get_by_role("link", name="Share link").get_attribute("href")
    assert page.request.get(link).body().startswith(b"%PDF")
    shot(page, "03c-report-qr")
    report_url = page.url
    # the other organization sees none of it
    other = _page(browser)
    sign_in(other, root, HARBOR_STAFF)
    assert other.goto(report_url).status == 404
    nav(other, "Meetings")
    assert "Implant board" not in main_text(other)
    # unlink, then Reactivate brings the profile back
    page = _page(browser)
    sign_in(page, root, STAFF)
    page.goto(root + "/console/patients/new")
    page.get_by_label("First name").fill("Nora")
    page.get_by_label("Last name").fill("Vega")
    page.get_by_label("Email").fill("nora.vega@example.org")
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("text=The patient was created.")
    page.get_by_role("button", name="Unlink from my organization").click()
    page.wait_for_selector("text=The patient was removed from your list.")
    shot(page, "03d-unlinked")
    page.get_by_role("button", name="Reactivate").click()
    page.wait_for_selector("text=The patient is active again.")
    assert page.get_by_role("heading", name="Nora Vega").is_visible()


# -- every item, in English and Spanish, on a desktop and a phone, as both organizations ------------
WALK = (  # (item, path) pages of the demo clinic's data; {uid} is a study the walk sends
    ("1-patients", "/console/patients?gender=female"), ("2-new-patient", "/console/patients/new"),
    ("3-patient", "/console/patients/demo-ana"), ("3-edit", "/console/patients/demo-ana/edit"),
    ("3-report", "/console/reports/demo-ana-rep"), ("4-ticket", "/console/patients/demo-ana/tickets/new"),
    ("5-merge", "/console/patients/demo-ana/merge"), ("6-unmatched", "/console/unmatched"),
    ("7-reports", "/console/reports"), ("7-new-report", "/console/patients/demo-ana/reports/new"),
    ("8-messages", "/console/messages"), ("3-meetings", "/console/meetings"),
)
SPANISH = {"1-patients": "Buscar pacientes", "2-new-patient": "Nombre", "3-patient": "Datos personales",
           "3-edit": "Guardar", "3-report": "Código QR", "4-ticket": "Tipo de escaneo", "5-merge": "Buscar pacientes similares",
           "6-unmatched": "Estudios sin asignar", "7-reports": "Palabras clave", "7-new-report": "Título del informe",
           "8-messages": "Mensajes", "3-meetings": "Nueva reunión"}


def _switch_language(page: Any, lang: str) -> None:
    page.get_by_label("Language" if "lang=\"en\"" in page.content() else "Idioma").select_option(lang)
    page.get_by_role("button", name="OK").click()
    page.wait_for_load_state()


def _fits(page: Any) -> bool:
    """Nothing wider than the screen (tables scroll inside their own box)."""
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_walk_every_item(server, browser, lang, phone):  # noqa: ANN001
    root, sc = server["root"], server["scanners"]
    tag = f"walk-{lang}-{'phone' if phone else 'desktop'}"
    study = ct(patient_id=f"WALK-{lang}-{phone}", patient_name="Walk^Unmatched")

    def sent() -> bool:  # the DICOM node may still be starting when this test runs first
        try:
            sc.store("CLINIC", study)
        except AssertionError:
            time.sleep(2)
            return False
        return True

    poll(sent, timeout=180)
    page = _page(browser, phone=phone)
    sign_in(page, root, STAFF)
    _switch_language(page, lang)
    assert page.locator("html").get_attribute("lang") == lang
    problems = []
    for name, path in WALK:
        r = page.goto(root + path)
        if r.status != 200:
            problems.append(f"{name}: HTTP {r.status}")
            continue
        assert_labelled(page)
        if lang == "es" and SPANISH[name] not in page.content():
            problems.append(f"{name}: no {SPANISH[name]!r}")
        if not _fits(page):
            problems.append(f"{name}: wider than the screen")
        shot(page, f"{tag}-{name}")
    # 9. the viewer, from the console, on the study the walk sent (an unmatched study of the clinic)
    uid = str(study.StudyInstanceUID)
    poll(lambda: uid in page.request.get(root + "/console/unmatched").text())
    page.goto(f"{root}/viewer/?study={uid}&dicomweb=/console/dicomweb&lang={lang}&return=/console/unmatched")
    page.wait_for_function("() => (window.fsViewer && window.fsViewer.ready) || document.querySelector('#status.error')",
                           timeout=90_000)
    if not page.evaluate("() => window.fsViewer.ready"):
        problems.append("9-viewer: " + page.locator("#status").inner_text())
    shot(page, f"{tag}-9-viewer")
    page.keyboard.press("Escape")
    page.wait_for_url("**/console/unmatched")
    # 10. the portal, for the patient, in the same language and width
    ana = _page(browser, phone=phone)
    ana.goto(root + "/portal/login")
    ana.get_by_label("Email").fill("ana@example.org")
    ana.get_by_label("Password").fill("demo-pass-1")
    ana.get_by_role("button", name="Sign in").click()
    ana.wait_for_selector("nav")
    _switch_language(ana, lang)  # her profile's language from now on
    for name, path in (("10-home", "/portal/"), ("10-invoices", "/portal/invoices"),
                       ("10-access-log", "/portal/access-log"), ("10-imaging", "/portal/imaging"),
                       ("10-messages", "/portal/messages")):
        r = ana.goto(root + path)
        if r.status != 200:
            problems.append(f"{name}: HTTP {r.status}")
            continue
        if ana.locator("html").get_attribute("lang") != lang:
            problems.append(f"{name}: not in {lang}")
        if not _fits(ana):
            problems.append(f"{name}: wider than the screen")
        shot(ana, f"{tag}-{name}")
    # the other organization, same language and width: none of the clinic's patients or pages
    other = _page(browser, phone=phone)
    sign_in(other, root, HARBOR_STAFF)
    _switch_language(other, lang)
    other.goto(root + "/console/patients")
    text_ = main_text(other)
    if "Ana Torres" in text_ or "Bob Stone" in text_ or "Eva Torres" not in text_:
        problems.append("harbor: patient list not its own")
    for path in ("/console/patients/demo-ana", "/console/reports/demo-ana-rep", "/console/patients/demo-ana/merge",
                 "/console/patients/demo-ana/reports/new"):
        if other.goto(root + path).status != 404:
            problems.append(f"harbor sees {path}")
    if uid in other.request.get(root + "/console/unmatched").text():
        problems.append("harbor sees the clinic's unmatched study")
    shot(other, f"{tag}-harbor-patients")
    assert not problems, problems
