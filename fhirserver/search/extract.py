"""Index extraction: a resource in, the rows of every index table out (written with the version).

Values are normalised once here so that queries stay single-column comparisons: strings are
case- and accent-folded, dates become UTC ranges, references split into type and id.
"""
from __future__ import annotations

import html
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from fhirserver.model import parse_reference
from fhirserver.search.dates import date_range
from fhirserver.search.paths import compile_path
from fhirserver.search.registry import Registry, SearchParam, compartment_params
from fhirserver.search.security_context import security_context_rows

MAX = 255
_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"\s+")
_NOT_TEXT = frozenset(("div", "reference", "system", "url", "data", "id", "versionId", "lastUpdated"))  # not words


def normalize(text: str) -> str:
    """Case- and accent-insensitive form used by string search (`Müller` -> `muller`)."""
    if text.isascii():  # most values: no accents to strip
        return text.lower().strip()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _clip(value: str | None) -> str | None:
    return value[:MAX] if isinstance(value, str) else value


def split_reference(value: str, base: str | None = None) -> tuple[str | None, str | None, str | None]:
    """A reference string as (type, id, url), read by the one canonical parser: a local
    reference gives (type, id, None); an external URL, a urn or an invalid string gives its text
    as url only (it links to no resource); a contained `#id` gives nothing."""
    ref = parse_reference(value, base)
    if ref.local:
        return ref.res_type, ref.res_id, None
    if ref.kind == "contained" or not value:
        return None, None, None
    return None, None, value


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key in ("family", "given", "prefix", "suffix", "text", "line", "city", "district",
                    "state", "postalCode", "country", "value", "display", "name"):
            v = node.get(key)
            if isinstance(v, str):
                yield v
            elif isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))


def _tokens(node: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(system, code, text) triples."""
    if isinstance(node, bool):
        yield None, "true" if node else "false", None
    elif isinstance(node, (str, int, Decimal)):
        yield None, str(node), None
    elif isinstance(node, dict):
        if "coding" in node or ("text" in node and "value" not in node and "code" not in node):
            for c in node.get("coding") or []:
                if isinstance(c, dict):
                    yield c.get("system"), c.get("code"), c.get("display")
            if isinstance(node.get("text"), str):
                yield None, None, node["text"]
        elif "code" in node or "system" in node and "value" not in node:  # Coding
            yield node.get("system"), node.get("code"), node.get("display")
        elif "value" in node:  # Identifier or ContactPoint
            value = node.get("value")
            if isinstance(value, str):
                is_contact = node.get("system") in ("phone", "fax", "email", "pager", "url", "sms", "other") \
                    and "type" not in node and "assigner" not in node
                type_text = (node.get("type") or {}).get("text") if isinstance(node.get("type"), dict) else None
                yield node.get("system"), value.lower() if is_contact else value, type_text
                if isinstance(node.get("type"), dict):  # identifier:of-type
                    for c in node["type"].get("coding") or []:
                        if isinstance(c, dict) and c.get("code"):
                            yield f"of-type:{c.get('system') or ''}|{c['code']}", value, None


def _dates(node: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(node, str):
        try:
            yield date_range(node)
        except ValueError:
            return
    elif isinstance(node, dict):
        if "start" in node or "end" in node:
            low = high = None
            try:
                if isinstance(node.get("start"), str):
                    low = date_range(node["start"])[0]
                if isinstance(node.get("end"), str):
                    high = date_range(node["end"])[1]
            except ValueError:
                return
            yield low, high
        for ev in node.get("event") or []:
            yield from _dates(ev)
        rep = node.get("repeat")
        if isinstance(rep, dict) and isinstance(rep.get("boundsPeriod"), dict):
            yield from _dates(rep["boundsPeriod"])


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or abs(d) >= Decimal(10) ** 17:
        return None
    return d


class Extractor:
    """Computes index rows for resources with one registry (HL7 parameters plus custom ones)."""

    def __init__(self, registry: Registry, base_url: str | None = None) -> None:
        self.registry = registry
        self.base_url = base_url
        self._plans: dict[str, list[tuple[SearchParam, Any]]] = {}

    def _plan(self, res_type: str) -> list[tuple[SearchParam, Any]]:
        plan = self._plans.get(res_type)
        if plan is None:
            plan = []
            for p in self.registry.params(res_type).values():
                if p.code in ("_id", "_lastUpdated") or not p.expression or p.type in ("composite", "special"):
                    continue
                plan.append((p, compile_path(p.expression)[0]))
            self._plans[res_type] = plan
        return plan

    def rows(self, res_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {k: [] for k in (
            "string", "token", "reference", "date", "number", "quantity", "uri", "text", "compartment")}
        refs_by_param: dict[str, list[tuple[str, str]]] = {}
        for p, fn in self._plan(res_type):
            nodes = fn(resource)
            if not nodes:
                continue
            code = p.code
            if p.type == "string":
                seen = set()
                for node in nodes:
                    for s in _strings(node):
                        n = normalize(s)[:MAX]
                        if n and (n, s) not in seen:
                            seen.add((n, s))
                            out["string"].append({"param": code, "value": n, "exact": s})
            elif p.type == "token":
                for node in nodes:
                    for system, tcode, text in _tokens(node):
                        if tcode is None and text is None and system is None:
                            continue
                        out["token"].append({"param": code, "system": _clip(system), "code": _clip(tcode),
                                             "text": _clip(normalize(text)) if text else None})
            elif p.type == "reference":
                for node in nodes:
                    value = node.get("reference") if isinstance(node, dict) else node if isinstance(node, str) else None
                    if isinstance(value, str):
                        t, i, url = split_reference(value, self.base_url)
                        if t or url:
                            out["reference"].append({"param": code, "target_type": t, "target_id": _clip(i), "url": url})
                            if t and i:
                                refs_by_param.setdefault(code, []).append((t, i))
                    if isinstance(node, dict) and isinstance(node.get("identifier"), dict):
                        ident = node["identifier"]
                        if isinstance(ident.get("value"), str):
                            out["token"].append({"param": f"{code}:identifier", "system": _clip(ident.get("system")),
                                                 "code": _clip(ident["value"]), "text": None})
            elif p.type == "date":
                for node in nodes:
                    for low, high in _dates(node):
                        out["date"].append({"param": code, "low": low, "high": high})
            elif p.type == "number":
                for node in nodes:
                    d = _number(node)
                    if d is not None:
                        out["number"].append({"param": code, "low": d, "high": d})
            elif p.type == "quantity":
                for node in nodes:
                    if isinstance(node, dict):
                        d = _number(node.get("value"))
                        if d is None:
                            continue
                        if "currency" in node:
                            system, qcode = "urn:iso:std:iso:4217", node.get("currency")
                        else:
                            system, qcode = node.get("system"), node.get("code") or node.get("unit")
                        out["quantity"].append({"param": code, "system": _clip(system), "code": _clip(qcode),
                                                "low": d, "high": d})
                        if node.get("unit") and node.get("code") and node["unit"] != node["code"]:
                            out["quantity"].append({"param": code, "system": None, "code": _clip(node["unit"]),
                                                    "low": d, "high": d})
            elif p.type == "uri":
                for node in nodes:
                    if isinstance(node, str):
                        out["uri"].append({"param": code, "uri": node})
        out["text"].append(self._text(resource))
        out["compartment"] = self._compartments(res_type, resource.get("id"), refs_by_param)
        comps, links = security_context_rows(res_type, resource, self.base_url)  # Binary's patient
        out["compartment"] += [c for c in comps if c not in out["compartment"]]
        out["reference"] += links
        return out

    @staticmethod
    def _text(resource: dict[str, Any]) -> dict[str, Any]:
        div = (resource.get("text") or {}).get("div") if isinstance(resource.get("text"), dict) else None
        narrative = normalize(_WS.sub(" ", html.unescape(_TAG.sub(" ", div)))) if isinstance(div, str) else None
        words: list[str] = []
        append = words.append

        # one call per container, not per value (this walk is a large share of indexing a write,
        # e.g. of every AuditEvent); words in document order, as a per-value recursion gives them
        def walk(items: Iterable[tuple[str, Any]]) -> None:
            for key, node in items:
                t = type(node)
                if t is str:
                    if key not in _NOT_TEXT:
                        append(node)
                elif t is dict:
                    walk(node.items())
                elif t is list:
                    walk([(key, v) for v in node])
                elif isinstance(node, str):
                    if key not in _NOT_TEXT:
                        append(node)
                elif isinstance(node, dict):
                    walk(node.items())
                elif isinstance(node, list):
                    walk([(key, v) for v in node])

        walk((k, v) for k, v in resource.items() if k not in ("text", "meta", "contained"))
        content = normalize(" ".join(words))[:20000]
        return {"narrative": narrative, "content": content}

    @staticmethod
    def _compartments(res_type: str, res_id: Any, refs: dict[str, list[tuple[str, str]]]) -> list[dict[str, Any]]:
        rows = set()
        for comp_type, per_type in compartment_params().items():
            if res_type == comp_type and isinstance(res_id, str):
                rows.add((comp_type, res_id))
            for param in per_type.get(res_type, ()):
                for t, i in refs.get(param, ()):
                    if t == comp_type:
                        rows.add((t, i[:64]))
        return [{"comp_type": t, "comp_id": i} for t, i in sorted(rows)]
