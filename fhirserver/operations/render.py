"""`$render` of a DiagnosticReport as PDF (reportlab), and the report's share links.

`DiagnosticReport/[id]/$render` (and `GET DiagnosticReport/[id]` with `Accept: application/pdf`)
answers the report's stored `presentedForm` PDF as it is, or (none stored, or `generate=true`) a PDF
drawn here: clinic, patient, date, results, conclusion, key images and a QR code that opens a
signed, expiring share link (`/portal/share/<token>`), revocable per report from the portal.
Everything referenced is read through the caller's policy, so the PDF shows what the caller may see.
The link itself is the portal's (`portal.shares`, reached through the shares port). A share link
names the user who made it; whoever opens it sees what that user may see now (the portal rebuilds
their policy), so a report whose `result` points at another patient's Observation
shows nothing of it, and a closed account's links stop working.
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any

from fhirserver.interactions import BinaryBody, FhirRequest, FhirResponse, dispatch
from fhirserver.model import parse_reference
from fhirserver.operations import _common as c, ports
from fhirserver.errors import FhirError

class PdfBody(BinaryBody):
    """A PDF answer, sent as it is."""

    mime = "application/pdf"


# -- reading through the caller's policy -------------------------------------------------------
def _read(ctx: Any, tx: Any, ref: Any) -> dict[str, Any] | None:
    parsed = parse_reference(ref, ctx.base)
    if not parsed.local:  # contained, bundle-local, external or invalid: nothing to read here
        return None
    try:
        resp = dispatch(ctx, tx, FhirRequest("GET", parsed.res_type, parsed.res_id))
    except FhirError:
        return None
    body = resp.body
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    return body if isinstance(body, dict) else None


def human_name(res: dict[str, Any] | None) -> str:
    if not res:
        return ""
    if res.get("resourceType") == "Organization":
        return res.get("name") or ""
    for n in res.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = [*(n.get("prefix") or []), *(n.get("given") or []), n.get("family") or ""]
        s = " ".join(p for p in parts if p)
        if s:
            return s
    return ""


def concept_text(c: Any) -> str:
    if not isinstance(c, dict):
        return ""
    if c.get("text"):
        return c["text"]
    for cd in c.get("coding") or []:
        if cd.get("display") or cd.get("code"):
            return cd.get("display") or cd.get("code")
    return ""


def value_text(obs: dict[str, Any]) -> str:
    q = obs.get("valueQuantity")
    if q:
        return f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
    for k in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if k in obs:
            return str(obs[k])
    if "valueCodeableConcept" in obs:
        return concept_text(obs["valueCodeableConcept"])
    return ""


def range_text(obs: dict[str, Any]) -> str:
    for r in obs.get("referenceRange") or []:
        if r.get("text"):
            return r["text"]
        lo, hi = (r.get("low") or {}).get("value"), (r.get("high") or {}).get("value")
        if lo is not None or hi is not None:
            return f"{'' if lo is None else lo} - {'' if hi is None else hi}"
    return ""


def report_details(ctx: Any, tx: Any, report: dict[str, Any]) -> dict[str, Any]:
    """What the PDF and the portal page show, read with the caller's policy."""
    patient = _read(ctx, tx, report.get("subject"))
    clinic = None
    for perf in report.get("performer") or []:
        r = _read(ctx, tx, perf)
        if r and r.get("resourceType") == "Organization":
            clinic = r
            break
        if r and not clinic:
            clinic = r
    results = []
    for ref in report.get("result") or []:
        o = _read(ctx, tx, ref)
        if o:
            interp = ", ".join(concept_text(i) for i in o.get("interpretation") or [])
            results.append({"name": concept_text(o.get("code")), "value": value_text(o),
                            "range": range_text(o), "flag": interp})
    images = []
    for m in report.get("media") or []:
        media = _read(ctx, tx, m.get("link"))
        att = (media or {}).get("content") or {}
        if att.get("data") and str(att.get("contentType", "")).startswith("image/"):
            images.append({"comment": m.get("comment") or "", "data": base64.b64decode(att["data"]),
                           "type": att["contentType"]})
    return {"patient": patient, "patient_name": human_name(patient) or "",
            "birth": (patient or {}).get("birthDate", ""), "clinic": human_name(clinic) or "",
            "date": (report.get("effectiveDateTime") or report.get("issued") or "")[:16].replace("T", " "),
            "title": concept_text(report.get("code")) or "Report", "status": report.get("status", ""),
            "conclusion": report.get("conclusion") or "", "results": results, "images": images,
            "codes": ", ".join(concept_text(c) for c in report.get("conclusionCode") or [])}


LABELS = {
    "en": {"patient": "Patient", "born": "Born", "date": "Date", "status": "Status", "results": "Results",
           "test": "Test", "value": "Value", "range": "Reference range", "flag": "Flag",
           "conclusion": "Conclusion", "images": "Key images", "qr": "Scan to open this report online "
           "(link expires; the patient can revoke it)", "clinic": "Clinic"},
    "es": {"patient": "Paciente", "born": "Nacimiento", "date": "Fecha", "status": "Estado",
           "results": "Resultados", "test": "Prueba", "value": "Valor", "range": "Rango de referencia",
           "flag": "Indicador", "conclusion": "Conclusión", "images": "Imágenes clave",
           "qr": "Escanee para abrir este informe en línea (el enlace caduca; el paciente puede revocarlo)",
           "clinic": "Clínica"},
}


def _pdf(title: str, blocks: list[Any]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import SimpleDocTemplate

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, title=title, author="fhirserver", leftMargin=40, rightMargin=40,
                            topMargin=40, bottomMargin=40)
    doc.build(blocks)
    return buf.getvalue()


def _table(rows: list[list[str]]) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    t = Table(rows, repeatRows=1, hAlign="LEFT")
    t.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde7f0")),
                           ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                           ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return t


def report_pdf(details: dict[str, Any], share_url: str | None = None, lang: str = "en") -> bytes:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, Paragraph, Spacer
    from xml.sax.saxutils import escape

    L = LABELS.get(lang, LABELS["en"])
    ss = getSampleStyleSheet()
    b: list[Any] = []
    if details["clinic"]:
        b.append(Paragraph(escape(details["clinic"]), ss["Title"]))
    b.append(Paragraph(escape(details["title"]), ss["Heading1"]))
    b.append(Paragraph(f"<b>{L['patient']}:</b> {escape(details['patient_name'])}"
                       + (f" &nbsp; <b>{L['born']}:</b> {escape(details['birth'])}" if details["birth"] else ""),
                       ss["Normal"]))
    b.append(Paragraph(f"<b>{L['date']}:</b> {escape(details['date'])} &nbsp; <b>{L['status']}:</b> "
                       f"{escape(details['status'])}", ss["Normal"]))
    if details["results"]:
        b += [Spacer(1, 4 * mm), Paragraph(L["results"], ss["Heading2"])]
        b.append(_table([[L["test"], L["value"], L["range"], L["flag"]]]
                        + [[r["name"], r["value"], r["range"], r["flag"]] for r in details["results"]]))
    if details["conclusion"] or details["codes"]:
        b += [Spacer(1, 4 * mm), Paragraph(L["conclusion"], ss["Heading2"]),
              Paragraph(escape(details["conclusion"] or details["codes"]), ss["Normal"])]
    if details["images"]:
        b += [Spacer(1, 4 * mm), Paragraph(L["images"], ss["Heading2"])]
        for im in details["images"][:6]:
            try:
                img = Image(io.BytesIO(im["data"]))
                scale = min(1.0, (80 * mm) / max(img.imageWidth, 1), (80 * mm) / max(img.imageHeight, 1))
                img.drawWidth, img.drawHeight = img.imageWidth * scale, img.imageHeight * scale
                b.append(img)
                if im["comment"]:
                    b.append(Paragraph(escape(im["comment"]), ss["Italic"]))
            except Exception:  # noqa: BLE001  an unreadable image is left out, not fatal
                continue
    if share_url:
        import segno

        qr = io.BytesIO()
        segno.make(share_url, error="m").save(qr, kind="png", scale=4)
        qr.seek(0)
        b += [Spacer(1, 6 * mm), Image(qr, width=35 * mm, height=35 * mm, hAlign="LEFT"),
              Paragraph(escape(L["qr"]), ss["Italic"])]
    return _pdf(f"{details['title']} - {details['patient_name']}", b)


def invoice_pdf(invoice: dict[str, Any], patient_name: str, clinic: str, lang: str = "en", *,
                address: str = "", tax_id: str = "", number: str | None = None, date: str | None = None,
                status: str | None = None, money: Any = None) -> bytes:
    """An invoice as PDF. The caller may pass the texts as the patient reads them (number, date,
    status in words, `money(amount)` formatting); the raw FHIR values otherwise."""
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, Spacer
    from xml.sax.saxutils import escape

    es = lang == "es"
    ss = getSampleStyleSheet()

    def fmt(amount: dict[str, Any] | None) -> str:
        if money is not None:
            return money(amount)
        amount = amount or {}
        return f"{amount.get('value', '')} {amount.get('currency', '')}".strip()

    total = invoice.get("totalGross") or invoice.get("totalNet") or {}
    rows = [["Concepto" if es else "Item", "Importe" if es else "Amount"]]
    for li in invoice.get("lineItem") or []:
        amount = next((pc.get("amount") for pc in li.get("priceComponent") or [] if pc.get("amount")), {}) or {}
        rows.append([concept_text(li.get("chargeItemCodeableConcept")) or "-", fmt(amount)])
    b = [Paragraph(escape(clinic or ""), ss["Title"])]
    if address:
        b.append(Paragraph(escape(address), ss["Normal"]))
    if tax_id:
        b.append(Paragraph(("NIF/CIF: " if es else "Tax ID: ") + escape(tax_id), ss["Normal"]))
    b += [Paragraph(("Factura n.º " if es else "Invoice no. ") + escape(number or invoice.get("id", "")), ss["Heading1"]),
          Paragraph(("Paciente: " if es else "Patient: ") + escape(patient_name), ss["Normal"]),
          Paragraph(("Fecha: " if es else "Date: ") + escape(date or (invoice.get("date") or "")[:10]), ss["Normal"]),
          Paragraph(("Estado: " if es else "Status: ") + escape(status or invoice.get("status", "")), ss["Normal"]),
          Spacer(1, 10), _table(rows), Spacer(1, 10),
          Paragraph(f"<b>Total:</b> {escape(fmt(total))}", ss["Normal"])]
    return _pdf(f"Invoice {number or invoice.get('id', '')}", b)


def share_url_for(services: Any, report_id: str, patient_id: str | None, user_pk: int | None) -> str | None:
    """The share link of a report made by a user; None without one (a system client or the
    no-auth mode has no one whose access the link could carry)."""
    if user_pk is None:
        return None
    token = ports.port(services, "shares").link_token(services.repo.engine, report_id, patient_id, user_pk)
    return f"{services.root_url()}/portal/share/{token}"


def render(ctx, tx, req) -> FhirResponse:  # noqa: ANN001
    """`DiagnosticReport/[id]/$render`: the report as PDF."""
    if req.res_type != "DiagnosticReport" or not req.res_id:
        raise FhirError(404, "$render is an operation on DiagnosticReport/[id]", "not-supported")
    resp = dispatch(ctx, tx, FhirRequest("GET", "DiagnosticReport", req.res_id))  # the caller's policy
    report = resp.body if isinstance(resp.body, dict) else json.loads(resp.body)
    args = c.params(req)
    if not c.truthy(args.get("generate")):
        for form in report.get("presentedForm") or []:
            if form.get("contentType") == "application/pdf" and form.get("data"):
                return FhirResponse(200, PdfBody(base64.b64decode(form["data"])))
    details = report_details(ctx, tx, report)
    pid = c.ref_id(report.get("subject"), "Patient", ctx.base)
    sharer = c.principal(ctx)
    url = share_url_for(c.services(ctx), req.res_id, pid, getattr(sharer, "user_pk", None))
    lang = str(args.get("language") or "en")[:2]
    return FhirResponse(200, PdfBody(report_pdf(details, url, lang)))
