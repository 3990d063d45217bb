"""The patient and guardian web portal under /portal: server-rendered pages that call
the same FHIR interactions and access rules as the REST API. `blueprint()` builds it.

`Fhir` (FHIR calls with one caller's policy), `translate` (English/Spanish), `webparts` (CSRF,
language, flash banner, page headers, sign-out), `report_view` and the templates' `_layout.html`
and `_macros.html` are shared with the staff console, which renders the same way."""
from __future__ import annotations

from typing import Any

from portal.core import Fhir
from portal.demo import DEV_CLINIC, STAFF_LOGIN, seed as seed_demo
from portal.i18n import ES as PORTAL_ES, LANGS, translate, translate_in
from portal.imaging import dicomweb
from portal.report_view import details as report_details, page_details as report_page_details, report_or_404
from portal.shares import ShareLinks
from portal.webparts import (
    Site as WebSite, back as redirect_back, csrf_ok, engine as web_engine, render as render_page,
    services as web_services, settle_lang, sign_out,
)


def blueprint() -> Any:
    from portal.views import blueprint as _bp

    return _bp()


__all__ = ["Fhir", "LANGS", "ShareLinks", "blueprint", "translate"]
# The DICOMweb proxy view (the console serves the viewer through it) and the `--dev` demo clinic.
__all__ += ["DEV_CLINIC", "STAFF_LOGIN", "dicomweb", "seed_demo"]
# What the staff console renders with: the shared web parts (each app passes its own Site), the
# report view and the portal's words (the console's dictionary falls back to them).
__all__ += ["PORTAL_ES", "WebSite", "csrf_ok", "redirect_back", "render_page", "report_details", "report_or_404",
            "report_page_details", "settle_lang", "sign_out", "translate_in", "web_engine", "web_services"]
