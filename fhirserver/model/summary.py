"""`_summary` and `_elements`: the subsets of a resource a client may ask for (R4 search.html)."""
from __future__ import annotations

from typing import Any, Iterable

from fhirserver.model.schema import schema
from fhirserver.model.types import R4_ONLY_SHAPES

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
SUMMARY_VALUES = ("true", "text", "data", "count", "false")


def _summary_elements(resource_type: str) -> frozenset[str] | None:
    """The `_summary=true` elements; None when the type's are not known (then: all but text)."""
    if resource_type in R4_ONLY_SHAPES:
        return None
    ti = schema().resource(resource_type)
    return ti.summary if ti is not None else None


def _mandatory_elements(resource_type: str) -> frozenset[str]:
    if resource_type in R4_ONLY_SHAPES:
        return frozenset()
    ti = schema().resource(resource_type)
    return ti.required if ti is not None else frozenset()


def _tagged(resource: dict[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    keep = set(keep) | {"resourceType", "id", "meta"}
    out = {k: v for k, v in resource.items() if k in keep or (k.startswith("_") and k[1:] in keep)}
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = tags + [SUBSETTED]
    out["meta"] = meta
    return out


def apply_summary(resource: dict[str, Any], summary: str | None,
                  elements: list[str] | None) -> dict[str, Any]:
    """Return the subset of `resource` asked for; the resource itself when nothing is asked."""
    rt = resource.get("resourceType", "")
    if elements:
        return _tagged(resource, list(elements) + list(_mandatory_elements(rt)))
    if summary in (None, "", "false", "count"):
        return resource
    if summary == "data":
        return _tagged(resource, [k for k in resource if k != "text"])
    if summary == "text":
        return _tagged(resource, ["text", *(_mandatory_elements(rt))])
    names = _summary_elements(rt)
    if names is None:
        return _tagged(resource, [k for k in resource if k != "text"])
    return _tagged(resource, names)
