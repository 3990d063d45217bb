"""What a new user gets from `serve --dev` (what `make run` starts): the demo clinic's defaults
when no FHIRSERVER_CLINIC_* variable is set, and the demo staff member signing in to the
console in a real browser and finding the demo patients."""
from __future__ import annotations

from pathlib import Path

import pytest

from portal_helpers import ART, CHROMIUM

pytest.importorskip("playwright.sync_api")


def test_dev_mode_sets_the_demo_clinic_unless_the_operator_did(monkeypatch):  # noqa: ANN001
    from fhirserver.cli import _settings, build_parser

    for k in ("NAME", "TIMEZONE", "ADDRESS", "TAX_ID"):
        monkeypatch.delenv(f"FHIRSERVER_CLINIC_{k}", raising=False)
    s = _settings(build_parser().parse_args(["serve", "--dev"]))
    assert s.dev_mode and s.clinic_name == "Sunrise Dental & Imaging Clinic" and s.clinic_timezone == "Europe/Madrid"
    assert _settings(build_parser().parse_args(["serve"])).clinic_name == ""  # only --dev
    monkeypatch.setenv("FHIRSERVER_CLINIC_NAME", "My Clinic")
    monkeypatch.setenv("FHIRSERVER_CLINIC_TIMEZONE", "America/Lima")
    s = _settings(build_parser().parse_args(["serve", "--dev"]))
    assert s.clinic_name == "My Clinic" and s.clinic_timezone == "America/Lima"


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")
def test_demo_staff_signs_in_to_the_console(dev_server, browser):  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(dev_server + "/console/")
    page.get_by_label("Email").fill("staff@clinic.example")
    page.get_by_label("Password").fill("demo-pass-1")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Search patients").wait_for()
    assert page.get_by_role("link", name="Ana Torres").count() == 1
    page.screenshot(path=str(ART / "dev-console-signed-in.png"))
