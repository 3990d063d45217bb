"""The home page, reports (page, PDF, attached forms) and their share links."""
from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, abort, g, request

from fhirserver.operations import report_details, report_pdf as render_report_pdf, share_url_for
from portal import core, report_view, shares
from portal.appointments import upcoming_and_past
from portal.web import _, back, download, lang, page, pid


def home() -> Response:
    f = core.user_fhir()
    p = pid() if g.patient else None
    appts = upcoming_and_past(f, p)[0] if p else []
    reports = f.search("DiagnosticReport", [("patient", p), ("_sort", "-date"), ("_count", "5")]) if p else []
    return page("home.html", upcoming=appts[:3], reports=reports)


def reports() -> Response:
    f = core.user_fhir()
    rows = f.search("DiagnosticReport", [("patient", pid()), ("_sort", "-date"), ("_count", "100")])
    return page("reports.html", reports=rows)


def _report_or_404(rid: str) -> dict[str, Any]:
    return report_view.report_or_404(core.user_fhir(), rid)


def report(rid: str) -> Response:
    rep = _report_or_404(rid)
    details = report_view.page_details(core.user_fhir(), rep)
    share = None
    if request.args.get("share"):
        share = share_url_for(core.services(), rid, g.patient, g.user["pk"])
    forms = [(i, x.get("title") or x.get("contentType")) for i, x in enumerate(rep.get("presentedForm") or [])]
    return page("report.html", rep=rep, d=details, share=share, forms=forms)


def report_pdf(rid: str) -> Response:
    rep = _report_or_404(rid)
    details = report_view.details(core.user_fhir(), rep)
    data = render_report_pdf(details, share_url_for(core.services(), rid, g.patient, g.user["pk"]), lang())
    return download(data, "application/pdf", f"report-{rid}.pdf")


def report_form(rid: str, idx: int) -> Response:
    rep = _report_or_404(rid)
    forms = rep.get("presentedForm") or []
    if idx >= len(forms) or not forms[idx].get("data"):
        abort(404)
    att = forms[idx]
    return download(base64.b64decode(att["data"]), att.get("contentType") or "application/octet-stream",
                     att.get("title") or f"report-{rid}")


def report_revoke(rid: str) -> Response:
    _report_or_404(rid)
    shares.revoke_shares(core.engine(), rid)
    return back("portal.report", _("Share links of this report were revoked."), rid=rid)


def share(token: str) -> Response:
    data = shares.check_share_token(core.engine(), token,
                                    getattr(core.services().settings, "share_link_seconds", shares.SHARE_SECONDS))
    policy = core.sharer_policy(data.get("u"), data.get("p")) if data is not None else None
    if policy is None:  # expired, revoked, or its maker's account or access is gone
        return page("message.html", 410, title=_("Share link"), text=_("This link is not valid or has expired."))
    # everything the PDF shows is read as the user who shared it: what they could not see is not shown
    f = core.Fhir(policy, audit=False)
    with f.repo.transaction() as tx:
        rep = f.read("DiagnosticReport", str(data.get("r")), tx)
        if rep is None:
            return page("message.html", 410, title=_("Share link"),
                        text=_("This link is not valid or has expired."))
        details = report_details(f.ctx, tx, rep)
    core.services().audit.record(who={"reference": "share-link", "client_id": core.PORTAL_CLIENT}, action="R",
                                 interaction="read", references=[f"DiagnosticReport/{data['r']}",
                                                                 f"Patient/{data.get('p')}"],
                                 remote=request.remote_addr)
    return download(render_report_pdf(details, None, lang()), "application/pdf", f"report-{data['r']}.pdf",
                     inline=True)


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/', home, ['GET']),
        ('/reports', reports, ['GET']),
        ('/reports/<rid>', report, ['GET']),
        ('/reports/<rid>.pdf', report_pdf, ['GET']),
        ('/reports/<rid>/form/<int:idx>', report_form, ['GET']),
        ('/reports/<rid>/revoke', report_revoke, ['POST']),
        ('/share/<token>', share, ['GET']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
