"""The patient and guardian web portal under /portal: server-rendered pages that call
the same FHIR interactions and access rules as the REST API. `blueprint()` builds it.

`Fhir` (FHIR calls with one caller's policy), `translate` (English/Spanish), `webparts` (CSRF,
language, flash banner, page headers, sign-out), `report_view` and the templates' `_layout.html`
and `_macros.html` are shared with the staff console, which renders the same way."""
from __future__ import annotations

from typing import Any

from portal.core import Fhir
from portal.demo import DEV_CLINIC, STAFF_LOGIN, seed as seed_demo
from portal.i18n import LANGS, translate
from portal.imaging import dicomweb
from portal.shares import ShareLinks


def blueprint() -> Any:
    from portal.views import blueprint as _bp

    return _bp()


__all__ = ["Fhir", "LANGS", "ShareLinks", "blueprint", "translate"]
# The DICOMweb proxy view (the console serves the viewer through it) and the `--dev` demo clinic.
__all__ += ["DEV_CLINIC", "STAFF_LOGIN", "dicomweb", "seed_demo"]
