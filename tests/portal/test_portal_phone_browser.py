"""The portal on a phone-width screen in Debian's chromium: the clinic's name in the header, the
access log in words (the clinician's read, not the patient's own views) fitting 360 px without
sideways scrolling, times in the clinic's zone, Spanish. Screenshots in tests/portal/artifacts/."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

pytest.importorskip("playwright.sync_api")
from portal_helpers import ART, CHROMIUM, sign_in, staff_token  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")]


def _fits(page) -> bool:  # noqa: ANN001
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_access_log_in_words_on_a_phone(dev_server, browser):  # noqa: ANN001
    root = dev_server
    tok = staff_token(root)
    r = requests.get(f"{root}/fhir/DiagnosticReport/demo-ana-rep", timeout=30,
                     headers={"Authorization": f"Bearer {tok}", "Accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    page = browser.new_page(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    sign_in(page, root, "ana@example.org")
    assert "Sunrise Dental & Imaging Clinic" in page.locator("header .clinic-name").inner_text()
    page.goto(root + "/portal/reports")  # her own view: not listed
    deadline = time.time() + 60
    while True:  # the audit trail is written in batches
        page.goto(root + "/portal/access-log")
        texts = page.locator("ol.log li .what").all_inner_texts()
        if "Dr. Lucia Moreno viewed your reports" in texts or time.time() > deadline:
            break
        page.wait_for_timeout(500)
    assert "Dr. Lucia Moreno viewed your reports" in texts, texts
    assert not any("Ana Torres" in t for t in texts), texts
    when = page.locator("ol.log li time").first.inner_text()
    assert re.fullmatch(r"\d{1,2} \w{3} \d{4}, \d\d:\d\d CES?T", when), when  # Europe/Madrid
    assert _fits(page)
    page.screenshot(path=str(ART / "phone-access-log.png"), full_page=True)
    for path in ("/portal/", "/portal/invoices", "/portal/appointments", "/portal/messages"):
        page.goto(root + path)
        assert _fits(page), path
    page.screenshot(path=str(ART / "phone-appointments.png"), full_page=True)
    # in Spanish
    page.get_by_label("Language").select_option("es")
    page.get_by_role("button", name="OK").click()
    page.goto(root + "/portal/access-log")
    assert "Dr. Lucia Moreno consultó sus informes" in page.locator("ol.log").inner_text()
    assert _fits(page)
    page.goto(root + "/portal/invoices")
    assert "45,00 €" in page.content() and "Emitida" in page.content()
    page.screenshot(path=str(ART / "phone-invoices-es.png"), full_page=True)
