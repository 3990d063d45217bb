"""The SearchParameter registry: HL7's 1,375 R4 parameters, split per resource type.

A shared parameter (`clinical-code` on 20 types) has one FHIRPath expression joined with `|`;
each type keeps only its own part, so extraction never evaluates other types' paths.
"""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from typing import Any, Iterable

from conformance import load_definition
from fhirserver.model import R4_RESOURCE_TYPES

# Parameters whose value lives in columns of the `resource` table, not in index tables.
COLUMN_PARAMS = {"_id": "token", "_lastUpdated": "date"}
# Parameters handled by dedicated code rather than by a FHIRPath expression.
SPECIAL_PARAMS = {"_text": "string", "_content": "string"}


@dataclasses.dataclass(frozen=True)
class Component:
    code: str            # the component parameter's code (from its definition URL)
    type: str
    expression: str      # relative to the composite's element


@dataclasses.dataclass(frozen=True)
class SearchParam:
    code: str
    type: str            # string token reference date number quantity uri composite special
    base: str            # the resource type this entry is for
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    url: str = ""
    description: str = ""


def _split_top(expr: str) -> list[str]:
    """Split a FHIRPath expression on `|` outside parentheses and quotes."""
    parts, depth, quote, cur = [], 0, False, []
    for ch in expr:
        if ch == "'" :
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quote:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur).strip())
    return [p for p in parts if p]


_TYPE_PREFIX = re.compile(r"^\(*\s*([A-Z][A-Za-z]+)(?:[.\s)]|$)")


def expression_for(expr: str | None, base: str) -> str | None:
    """The part of a (possibly multi-type) expression that applies to `base`."""
    if not expr:
        return None
    mine = []
    for part in _split_top(expr):
        m = _TYPE_PREFIX.match(part)
        if m and m.group(1) in R4_RESOURCE_TYPES | {"Resource", "DomainResource"}:
            if m.group(1) in (base, "Resource", "DomainResource"):
                mine.append(part)
        else:  # a path without its type (InsurancePlan's `name | alias`)
            mine.append(f"{base}.{part}")
    return " | ".join(mine) or None


def _from_resource(sp: dict[str, Any], url_to_code: dict[str, tuple[str, str]]) -> list[SearchParam]:
    out = []
    comps = []
    for c in sp.get("component") or []:
        code, ctype = url_to_code.get(c.get("definition", ""), ("", "token"))
        if code:
            comps.append(Component(code, ctype, c.get("expression", "")))
    for base in sp.get("base") or []:
        out.append(SearchParam(
            code=sp["code"], type=sp["type"], base=base,
            expression=expression_for(sp.get("expression"), base),
            targets=tuple(sp.get("target") or ()), components=tuple(comps),
            url=sp.get("url", ""), description=(sp.get("description") or "").split("\n")[0][:200]))
    return out


class Registry:
    """Search parameters per resource type, including `Resource`-level ones on every type."""

    def __init__(self, definitions: Iterable[dict[str, Any]]) -> None:
        defs = list(definitions)
        url_to_code = {d.get("url", ""): (d["code"], d["type"]) for d in defs}
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        common: dict[str, SearchParam] = {}
        for d in defs:
            for p in _from_resource(d, url_to_code):
                if p.base in ("Resource", "DomainResource"):
                    common[p.code] = p
                else:
                    self._by_type.setdefault(p.base, {})[p.code] = p
        self._common = common
        for rt in R4_RESOURCE_TYPES:
            own = self._by_type.setdefault(rt, {})
            for code, p in common.items():
                own.setdefault(code, dataclasses.replace(p, base=rt, expression=(
                    p.expression.replace("Resource.", f"{rt}.", 1) if p.expression else None)))

    def params(self, res_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(res_type, {})

    def get(self, res_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(res_type, {}).get(code)

    def common(self, code: str) -> SearchParam | None:
        return self._common.get(code)

    def with_custom(self, custom: Iterable[dict[str, Any]]) -> "Registry":
        """A registry extended with SearchParameter resources stored on this server."""
        clone = Registry.__new__(Registry)
        clone._common = dict(self._common)
        clone._by_type = {k: dict(v) for k, v in self._by_type.items()}
        url_to_code = {}
        for params in clone._by_type.values():
            for p in params.values():
                url_to_code[p.url] = (p.code, p.type)
        custom = list(custom)
        url_to_code.update({d.get("url", ""): (d.get("code", ""), d.get("type", "")) for d in custom})
        for d in custom:
            if not d.get("code") or not d.get("type") or not d.get("base"):
                continue
            for p in _from_resource(d, url_to_code):
                clone._by_type.setdefault(p.base, {})[p.code] = p
        return clone


@lru_cache(maxsize=1)
def base_registry() -> Registry:
    """The HL7 R4 parameters (parsed once per process; immutable)."""
    bundle = load_definition("Bundle-searchParams.json")
    return Registry(e["resource"] for e in bundle["entry"] if "resource" in e)


@lru_cache(maxsize=1)
def compartment_params() -> dict[str, dict[str, tuple[str, ...]]]:
    """{compartment type: {resource type: (param codes linking a resource to the compartment)}}."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for comp in ("patient", "practitioner", "relatedPerson", "encounter", "device"):
        cd = load_definition(f"CompartmentDefinition-{comp}.json")
        per_type = {}
        for r in cd.get("resource", []):
            if r.get("param"):
                per_type[r["code"]] = tuple(r["param"])
        out[cd["code"]] = per_type
    # Patient data outside the R4 compartment (Device.patient, Task.for ...) is that patient's too:
    # one loader, so the index, compartment search and the access gate agree. No fallback: a
    # definition that cannot be read stops the server instead of opening access.
    for r in load_definition("patient-data-links.json")["resource"]:
        out["Patient"][r["code"]] = tuple(dict.fromkeys(out["Patient"].get(r["code"], ()) + tuple(r["param"])))
    if not out.get("Patient"):
        raise RuntimeError("The Patient compartment definition is empty")
    return out


@lru_cache(maxsize=1)
def patient_compartment_types() -> frozenset[str]:
    """Every type that can belong to a patient's compartment (Patient itself included)."""
    return frozenset(compartment_params()["Patient"]) | {"Patient"}
