"""The access log in words: who (a name, not a reference), did what (viewed your report...), when
(in the clinic's time zone). The signed-in user's own page views are left out: a patient wants to
know who else looked."""
from __future__ import annotations

from typing import Any, Callable

from fhirserver.operations import human_name

ACTIONS = {"R": "%(who)s viewed %(what)s", "E": "%(who)s looked through %(what)s",
           "C": "%(who)s added %(what)s", "U": "%(who)s changed %(what)s", "D": "%(who)s deleted %(what)s",
           "X": "%(who)s used %(what)s"}
THINGS = {"DiagnosticReport": "your reports", "Observation": "your results", "ImagingStudy": "your images",
          "Appointment": "your appointments", "DocumentReference": "your documents", "Binary": "your documents",
          "Communication": "your messages", "Invoice": "your invoices", "Consent": "your sharing settings",
          "QuestionnaireResponse": "your answers", "Condition": "your conditions",
          "MedicationRequest": "your medicines", "AllergyIntolerance": "your allergies", "Encounter": "your visits",
          "Procedure": "your procedures", "Immunization": "your vaccinations", "Patient": "your record"}


def _agent_ref(event: dict[str, Any]) -> tuple[str, str]:
    """(reference, client id) of the event's requesting agent."""
    for a in event.get("agent") or []:
        who = a.get("who") or {}
        ref = who.get("reference") or ""
        client = a.get("altId") or (who.get("identifier") or {}).get("value") or ""
        if ref or client:
            return ref, client
    return "", ""


def _what(event: dict[str, Any]) -> list[str]:
    kinds = []
    for e in event.get("entity") or []:
        ref = (e.get("what") or {}).get("reference") or ""
        kind = THINGS.get(ref.split("/", 1)[0]) if "/" in ref else None
        if kind and kind not in kinds:
            kinds.append(kind)
    if len(kinds) > 1 and "your record" in kinds:
        kinds.remove("your record")  # "your record" only when nothing more precise was touched
    return kinds or ["your record"]


def readable(bundle: dict[str, Any], own: set[str], read_name: Callable[[str], dict | None],
             t: Callable[..., str], when: Callable[[str | None], str]) -> list[dict[str, str]]:
    """The events of a `$access-log` Bundle as sentences, the references in `own` left out."""
    names: dict[str, str] = {}

    def who_name(ref: str, client: str) -> str:
        if ref == "share-link":
            return t("Someone with a share link")
        if ref and "/" in ref:
            if ref not in names:
                res = read_name(ref)
                names[ref] = human_name(res) if res else ""
            if names[ref]:
                return names[ref]
            kind = ref.split("/", 1)[0]
            return t("A clinician") if kind == "Practitioner" else t("A family member") \
                if kind == "RelatedPerson" else t("Someone at the clinic")
        return t("The app %(client)s", client=client) if client else t("Someone at the clinic")

    out = []
    for entry in bundle.get("entry") or []:
        ev = entry.get("resource") or {}
        ref, client = _agent_ref(ev)
        if ref and ref in own:
            continue
        who = who_name(ref, client)
        what = ", ".join(t(k) for k in _what(ev))
        action = ACTIONS.get(ev.get("action", ""), ACTIONS["X"])
        out.append({"who": who, "what": what, "when": when(ev.get("recorded")), "iso": ev.get("recorded") or "",
                    "text": t(action, who=who, what=what)})
    return out
