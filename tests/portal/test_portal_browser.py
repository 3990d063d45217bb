"""The portal in Debian's headless chromium (Playwright) against `fhirserver serve --dev` (auth on,
real gunicorn workers, the demo clinic): sign in, a report and its PDF (checked with pypdf),
booking, a message, an upload, granting and revoking access; a screenshot of each page."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ART = Path(__file__).parent / "artifacts"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")]


@pytest.fixture(scope="module")
def dev_server(session_app, database_url, tmp_path_factory):  # noqa: ANN001, ANN201
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = tmp_path_factory.mktemp("portal-live")
    # On SQLite the demo server gets a database of its own: under pytest-xdist, sharing the
    # worker's SQLite file with a second multi-process server once left it unreadable ("file is
    # not a database") for the tests after it; PostgreSQL is shared as in production.
    url = database_url if database_url.startswith("postgres") else f"sqlite:///{data_dir / 'demo.sqlite3'}"
    env = dict(os.environ, FHIRSERVER_DATABASE_URL=url, FHIRSERVER_DATA_DIR=str(data_dir))
    log_path = data_dir / "server.log"  # a file, not a pipe: an unread pipe fills up and blocks the server
    proc = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--dev", "--port", str(port),
                             "--workers", "2", "--dicom-port", "0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "wb"))
    root = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
        try:
            if requests.get(root + "/portal/login", timeout=10).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or still starting
            time.sleep(0.3)
    yield root
    proc.terminate()
    proc.wait(15)


def test_patient_journey_in_chromium(dev_server):
    from pypdf import PdfReader

    ART.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.goto(dev_server + "/portal/login")
            page.screenshot(path=str(ART / "01-login.png"))
            page.get_by_label("Email").fill("ana@example.org")
            page.get_by_label("Password").fill("demo-pass-1")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("h1")
            page.screenshot(path=str(ART / "02-home.png"))
            page.goto(dev_server + "/portal/reports/demo-ana-rep")
            page.screenshot(path=str(ART / "03-report.png"), full_page=True)
            with page.expect_download() as dl:
                page.get_by_role("link", name="Download PDF").first.click()
            data = Path(dl.value.path()).read_bytes()
            text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)
            assert "Ana Torres" in text
            page.goto(dev_server + "/portal/appointments")
            page.locator("input[name=slot]").first.check()
            page.get_by_role("button", name="Book", exact=True).click()
            page.wait_for_selector(".flash")
            page.screenshot(path=str(ART / "04-booked.png"), full_page=True)
            page.goto(dev_server + "/portal/messages")
            page.get_by_label("To", exact=True).select_option("demo-dr")
            page.get_by_label("Subject", exact=True).fill("Fasting")
            page.get_by_label("Message", exact=True).fill("Must I fast before the test?")
            page.get_by_role("button", name="Send").click()
            page.wait_for_selector(".flash")
            page.screenshot(path=str(ART / "05-messages.png"), full_page=True)
            page.goto(dev_server + "/portal/documents")
            page.get_by_label("File").set_input_files({"name": "note.txt", "mimeType": "text/plain",
                                                       "buffer": b"hello clinic"})
            page.get_by_label("Description").fill("Note for the clinic")
            page.get_by_role("button", name="Upload").click()
            page.wait_for_selector(".flash")
            page.screenshot(path=str(ART / "06-documents.png"), full_page=True)
            page.goto(dev_server + "/portal/sharing")
            page.get_by_label("Organization").select_option("demo-other")
            page.get_by_role("button", name="Grant access").click()
            page.wait_for_selector("text=Harbor Orthodontics")
            page.screenshot(path=str(ART / "07-shared.png"), full_page=True)
            page.get_by_role("button", name="Revoke").first.click()
            page.wait_for_selector("text=No one else has access.")
            page.screenshot(path=str(ART / "08-revoked.png"), full_page=True)
            page.goto(dev_server + "/portal/dev/mail")
            assert "dr.moreno@clinic.example" in page.content()
            page.screenshot(path=str(ART / "09-mail.png"), full_page=True)
        finally:
            browser.close()
