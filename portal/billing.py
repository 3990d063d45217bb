"""Invoices and their PDFs."""
from __future__ import annotations

from flask import Blueprint, Response, abort, g

from fhirserver.operations import human_name, invoice_pdf as render_invoice_pdf
from portal import core
from portal.clinic import invoice_number
from portal.web import clinic, download, lang, money, page, pid, ref_id, status_word, when


def invoices() -> Response:
    rows = core.user_fhir().search("Invoice", [("patient", pid()), ("_count", "100")])
    return page("invoices.html", invoices=rows)


def invoice_pdf(iid: str) -> Response:
    f = core.user_fhir()
    inv = f.read("Invoice", iid)
    if inv is None:
        abort(404)
    issuer_id = ref_id(inv.get("issuer"), "Organization")
    issuer = f.read("Organization", issuer_id) if issuer_id else None
    c = clinic()
    data = render_invoice_pdf(inv, human_name(g.patient_res), c.name or human_name(issuer), lang(),
                           address=c.address, tax_id=c.tax_id, number=invoice_number(inv),
                           date=when(inv.get("date"), date_only=True), status=status_word(inv.get("status")),
                           money=money)
    return download(data, "application/pdf", f"invoice-{invoice_number(inv)}.pdf")


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/invoices', invoices, ['GET']),
        ('/invoices/<iid>.pdf', invoice_pdf, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
