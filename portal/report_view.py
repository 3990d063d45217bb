"""A DiagnosticReport as the portal's and the console's report pages show it, read with the
caller's own policy: what that caller may not see is a 404, not a hint that it exists."""
from __future__ import annotations

import base64
from typing import Any

from flask import abort

from fhirserver.operations import report_details


def report_or_404(f: Any, rid: str) -> dict[str, Any]:
    """The report as `f` (a `portal.core.Fhir`) may read it, else 404."""
    rep = f.read("DiagnosticReport", rid)
    if rep is None:
        abort(404)
    return rep


def details(f: Any, rep: dict[str, Any]) -> dict[str, Any]:
    """Results, conclusion and images of `rep`, as the report PDF renders them."""
    with f.repo.transaction() as tx:
        return report_details(f.ctx, tx, rep)


def page_details(f: Any, rep: dict[str, Any]) -> dict[str, Any]:
    """`details` with the images inline (data: URLs), so the page needs no image endpoint."""
    d = details(f, rep)
    d["images"] = [{"comment": i["comment"], "src": f"data:{i['type']};base64," + base64.b64encode(i["data"]).decode()}
                   for i in d["images"]]
    return d
