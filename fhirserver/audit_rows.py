"""The index rows of the audit trail's own AuditEvents, read straight off their fixed shape.

Why: every authenticated read becomes an AuditEvent, and the generic extraction (every R4
AuditEvent parameter's path run over the body, the full-text walk) was two thirds of the
trail's cost. The trail builds one shape only (`fhirserver.audit._event` plus the request-id
entity), so its rows can be read off that shape directly: the same rows, in the same order,
with the same normalisation functions the search package applies (tests/auth/
test_audit_rows.py compares both over varied records).

It applies only while the AuditEvent parameters are the HL7 ones (`standard`): a custom
SearchParameter on AuditEvent sends the trail back to the generic extraction. And it answers
None for any event whose references are not plain `Type/id` (an absolute fhirUser, a fullUrl
that named no resource ...): those take the generic path too.
"""
from __future__ import annotations

from typing import Any

from fhirserver.model import parse_reference
from fhirserver.search import base_registry, date_range, normalize

MAX = 255  # the index's value length (fhirserver.search.extract.MAX)
_SKIPPED_WORDS = frozenset({"div", "reference", "system", "url", "data", "id", "versionId", "lastUpdated"})
_OUTSIDE_WORDS = frozenset({"text", "meta", "contained"})  # top-level keys the full text leaves out
_COMPARTMENTS = (("Device", "agent"), ("Patient", "patient"), ("Practitioner", "agent"))  # of AuditEvent


def signature(registry: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple((p.code, p.type, p.expression) for p in registry.params("AuditEvent").values())


def standard(registry: Any) -> bool:
    """Whether AuditEvents index by the HL7 parameters alone (what `rows` builds)."""
    return signature(registry) == signature(base_registry())


def _clip(value: str | None) -> str | None:
    return value[:MAX] if isinstance(value, str) else value


def _plain(value: Any) -> tuple[str, str] | None:
    """(type, id) of a plain `Type/id` reference, else None (the generic path reads it)."""
    if not isinstance(value, str):
        return None
    ref = parse_reference(value)
    if not ref.local or value != f"{ref.res_type}/{ref.res_id}":
        return None
    return ref.res_type, ref.res_id


def _coding(param: str, c: dict[str, Any]) -> dict[str, Any]:
    display = c.get("display")
    return {"param": param, "system": _clip(c.get("system")), "code": _clip(c.get("code")),
            "text": _clip(normalize(display)) if display else None}


def _code(param: str, value: str) -> dict[str, Any]:
    return {"param": param, "system": None, "code": _clip(value), "text": None}


def _string(out: list[dict[str, Any]], param: str, s: Any, seen: set[tuple[str, str]]) -> None:
    if isinstance(s, str):
        n = normalize(s)[:MAX]
        if n and (n, s) not in seen:
            seen.add((n, s))
            out.append({"param": param, "value": n, "exact": s})


def rows(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]] | None:
    """The index rows of one stamped trail AuditEvent (as `Extractor.rows` gives them), or None."""
    agent = body["agent"][0]
    who = agent["who"]
    entities = body.get("entity") or ()
    who_ref = None
    if "reference" in who:
        who_ref = _plain(who["reference"])
        if who_ref is None:
            return None
    entity_refs = []
    for e in entities:
        what = e["what"]
        if "reference" in what:
            ref = _plain(what["reference"])
            if ref is None:
                return None
            entity_refs.append(ref)
    string: list[dict[str, Any]] = []
    token: list[dict[str, Any]] = [_code("action", body["action"])]
    reference: list[dict[str, Any]] = []
    network = agent.get("network")
    if network:
        _string(string, "address", network.get("address"), set())
    if who_ref is not None:
        reference.append({"param": "agent", "target_type": who_ref[0], "target_id": _clip(who_ref[1]), "url": None})
    ident = who.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        token.append({"param": "agent:identifier", "system": _clip(ident.get("system")),
                      "code": _clip(ident["value"]), "text": None})
    if isinstance(agent.get("altId"), str):
        token.append(_code("altid", agent["altId"]))
    try:
        date = [dict(zip(("param", "low", "high"), ("date", *date_range(body["recorded"]))))]
    except ValueError:
        date = []
    for t, i in entity_refs:
        reference.append({"param": "entity", "target_type": t, "target_id": _clip(i), "url": None})
    for e in entities:
        ident = e["what"].get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            token.append({"param": "entity:identifier", "system": _clip(ident.get("system")),
                          "code": _clip(ident["value"]), "text": None})
    seen: set[tuple[str, str]] = set()
    for e in entities:
        _string(string, "entity-name", e.get("name"), seen)
    token += [_coding("entity-role", e["role"]) for e in entities if "role" in e]
    token += [_coding("entity-type", e["type"]) for e in entities if "type" in e]
    token.append(_code("outcome", body["outcome"]))
    patients = ([who_ref] if who_ref is not None and who_ref[0] == "Patient" else []) + \
        [r for r in entity_refs if r[0] == "Patient"]
    reference += [{"param": "patient", "target_type": t, "target_id": _clip(i), "url": None} for t, i in patients]
    token += [_coding("subtype", c) for c in body["subtype"]]
    token.append(_coding("type", body["type"]))
    by_param = {"agent": [who_ref] if who_ref is not None else [], "patient": patients}
    compartment = sorted({(t, i[:64]) for t, param in _COMPARTMENTS for rt, i in by_param[param] if rt == t})
    return {"string": string, "token": token, "reference": reference, "date": date, "number": [],
            "quantity": [], "uri": [], "text": [{"narrative": None, "content": _content(body)}],
            "compartment": [{"comp_type": t, "comp_id": i} for t, i in compartment]}


def _content(body: dict[str, Any]) -> str:
    """The full-text words (`Extractor._text`): every string outside the skipped keys, in order."""
    words: list[str] = []
    _walk(body, words, _OUTSIDE_WORDS)
    return normalize(" ".join(words))[:20000]


def _walk(node: dict[str, Any], words: list[str], outside: frozenset[str] = frozenset()) -> None:
    """`Extractor._text`'s walk, with one call per object rather than per value (the same
    strings in the same order: a list's strings count under the list's key)."""
    for k, v in node.items():
        if k in outside:
            continue
        kind = type(v)
        if kind is str:
            if k not in _SKIPPED_WORDS:
                words.append(v)
        elif kind is dict:
            _walk(v, words)
        elif kind is list:
            for x in v:
                if type(x) is str:
                    if k not in _SKIPPED_WORDS:
                        words.append(x)
                elif type(x) is dict:
                    _walk(x, words)
                elif type(x) is list:
                    _walk({k: x}, words)


__all__ = ["rows", "standard"]
