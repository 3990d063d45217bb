"""Questionnaires: the list, the form with its checks, and the saved answers."""
from __future__ import annotations

import re

from flask import Blueprint, Response, abort, g, request

from portal import core
from portal.web import _, back, now_iso, page, pid


def questionnaires() -> Response:
    qs = core.user_fhir().search("Questionnaire", [("status", "active"), ("_count", "50")])
    done = core.user_fhir().search("QuestionnaireResponse", [("patient", pid()), ("_count", "100")])
    return page("questionnaires.html", qs=qs, done=done)


def _items(items: list[dict]) -> list[dict]:
    out = []
    for it in items or []:
        if it.get("type") == "group":
            out += _items(it.get("item") or [])
        elif it.get("type") != "display":
            out.append(it)
    return out


def questionnaire(qid: str) -> Response:
    q = core.user_fhir().read("Questionnaire", qid)
    if q is None:
        abort(404)
    items = _items(q.get("item") or [])
    if request.method == "GET":
        return page("questionnaire.html", q=q, items=items)
    form, errors, answers = request.form, {}, []
    for it in items:
        lid, t = it["linkId"], it.get("type", "string")
        raw = form.get(f"q_{lid}", "").strip()
        if t == "boolean":
            raw = raw if raw in ("true", "false") else ""
        if not raw:
            if it.get("required"):
                errors[lid] = _("This answer is required.")
            continue
        if t == "integer":
            if not re.fullmatch(r"-?\d{1,9}", raw):
                errors[lid] = _("Enter a whole number.")
                continue
            ans = {"valueInteger": int(raw)}
        elif t == "date":
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                errors[lid] = _("Enter a date (YYYY-MM-DD).")
                continue
            ans = {"valueDate": raw}
        elif t == "boolean":
            ans = {"valueBoolean": raw == "true"}
        elif t == "choice":
            opt = next((o["valueCoding"] for o in it.get("answerOption") or []
                        if "valueCoding" in o and o["valueCoding"].get("code") == raw), None)
            ans = {"valueCoding": opt} if opt else {"valueString": raw}
        else:
            ans = {"valueString": raw[:5000]}
        answers.append({"linkId": lid, "text": it.get("text"), "answer": [ans]})
    if errors:
        return page("questionnaire.html", 400, q=q, items=items, form=form, errors=errors)
    core.user_fhir().create("QuestionnaireResponse", {
        "resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": q.get("url") or f"Questionnaire/{qid}",
        "subject": {"reference": f"Patient/{pid()}"}, "authored": now_iso(),
        "author": {"reference": g.user["fhir_user"]} if g.user["fhir_user"] else None, "item": answers})
    return back("portal.questionnaires", _("Thank you, your answers were saved."))


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/questionnaires', questionnaires, ['GET']),
        ('/questionnaires/<qid>', questionnaire, ['GET', 'POST']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
