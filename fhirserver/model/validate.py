"""Parsing and validating resources with fhir.resources' R4B models.

The models only validate: what is stored is the client's JSON (decimals kept exactly), never a
re-serialised model, so content round-trips unchanged.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from fhirserver.errors import Issue
from fhirserver.model.prevalidate import surely_valid
from fhirserver.model.schema import COMPLEX, RESOURCE, TypeInfo, schema
from fhirserver.model.text import value_issues as _value_issues
from fhirserver.model.types import R4_ONLY_SHAPES, R4_RESOURCE_TYPES

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# whether a body `prevalidate.surely_valid` vouches for skips the models (tests/model/
# test_fast_validation.py shows it vouches for no body they refuse)
FAST_PATH = True


class InvalidResource(ValueError):
    """The content is not a valid resource; `status` is 400 (not a resource at all) or 422."""

    def __init__(self, issues: list[Issue], status: int = 422) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues
        self.status = status


def is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))


@lru_cache(maxsize=None)
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part)
        if name.endswith("__ext"):
            name = "_" + name[: -len("__ext")]
        if name.startswith("function-") or name in ("__root__",):
            continue
        out += "." + name
    return out


def _issues_from(resource_type: str, exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc") or ())
        path = _path(resource_type, loc)
        kind = err.get("type", "")
        code = "required" if "missing" in kind else ("structure" if "extra" in kind else "value")
        msg = err.get("msg", "invalid")
        issues.append(Issue("error", code, f"{path}: {msg}", path))
    return issues or [Issue("error", "invalid", f"{resource_type}: {exc}", resource_type)]


def resource_type_of(data: Any) -> str:
    """The resourceType of a parsed body, or InvalidResource(400) when it is not a resource."""
    if not isinstance(data, dict):
        raise InvalidResource([Issue("error", "structure", "The body must be a JSON object (a FHIR resource)")], 400)
    rt = data.get("resourceType")
    if not isinstance(rt, str) or not rt:
        raise InvalidResource([Issue("error", "structure", "The body has no resourceType", "resourceType")], 400)
    if rt not in R4_RESOURCE_TYPES:
        raise InvalidResource([Issue("error", "not-supported", f"Unknown resource type '{rt}'", "resourceType")], 400)
    return rt


def validate_resource(data: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a parsed body is a valid R4 resource (of `expected_type` when given); return it."""
    rt = resource_type_of(data)
    if expected_type and rt != expected_type:
        raise InvalidResource([Issue(
            "error", "invalid",
            f"The body is a {rt} but the URL names {expected_type}", "resourceType")], 400)
    issues: list[Issue] = []
    if "id" in data and not is_valid_id(data["id"]):
        issues.append(Issue("error", "value", f"{rt}.id: '{data['id']}' is not a valid id "
                            "([A-Za-z0-9-.]{1,64})", f"{rt}.id"))
    # the models cost a third of a write: skipped when the quick walk vouches for the body (it
    # never vouches for one they would refuse, nor for nulls or codes outside their bindings, so
    # every error still comes from the same checks as without it)
    vouched = FAST_PATH and surely_valid(data, rt)
    if not vouched and not _nulls_absent(data):  # the exact walk only to say where, on the rare bad body
        _check_nulls(data, rt, issues)
    issues.extend(value_issues(data, rt))
    if issues and any(i.code == "not-supported" for i in issues):
        raise InvalidResource(issues, 422)  # the models cannot even look up an unknown type
    if rt not in R4_ONLY_SHAPES and not (vouched and not issues):
        try:
            _model(rt).model_validate(data)
        except ValidationError as exc:
            issues.extend(_issues_from(rt, exc))
        except (TypeError, ValueError, LookupError) as exc:  # model-level checks raising plain errors
            issues.append(Issue("error", "invalid", f"{rt}: {exc}", rt))
        ti = schema().resource(rt)
        if not _codes_allowed(data, ti):  # the exact walk only to say where, on the rare bad code
            check_codes(data, ti, rt, issues)
    if issues:
        raise InvalidResource(issues, 422)
    return data


def value_issues(data: Any, path: str) -> list[Issue]:
    return _value_issues(data, path)


def _check_nulls(node: Any, path: str, issues: list[Issue]) -> None:
    """FHIR JSON never has null properties or empty objects/arrays/strings (R4 json.html)."""
    if isinstance(node, dict):
        if not node:
            issues.append(Issue("error", "value", f"{path}: empty objects are not allowed", path))
        for key, value in node.items():
            if value is None:
                issues.append(Issue("error", "value", f"{path}.{key}: null is not allowed", f"{path}.{key}"))
            elif key == "div" or (isinstance(value, str) and not value.strip() and value == ""):
                if value == "":
                    issues.append(Issue("error", "value", f"{path}.{key}: empty strings are not allowed",
                                        f"{path}.{key}"))
            elif isinstance(value, (dict, list)):
                _check_nulls(value, f"{path}.{key}", issues)
    elif isinstance(node, list):
        if not node:
            issues.append(Issue("error", "value", f"{path}: empty arrays are not allowed", path))
        for i, item in enumerate(node):
            # null is allowed inside arrays only to pair primitives with their `_x` extensions
            if isinstance(item, (dict, list)):
                _check_nulls(item, f"{path}[{i}]", issues)


def _nulls_absent(data: Any) -> bool:
    """True when `_check_nulls` finds nothing, decided without building a path per node."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if not node:
                return False
            for key, value in node.items():
                if value is None or value == "":
                    return False
                if key != "div" and isinstance(value, (dict, list)):
                    stack.append(value)
        elif not node:  # an empty list
            return False
        else:
            stack.extend(item for item in node if isinstance(item, (dict, list)))
    return True


def _codes_allowed(data: dict[str, Any], ti: TypeInfo) -> bool:
    """True when `check_codes` finds nothing, decided without building a path per value."""
    table = schema()
    stack: list[tuple[dict[str, Any], TypeInfo]] = [(data, ti)]
    while stack:
        node, info = stack.pop()
        elements = info.elements
        for key, value in node.items():
            el = elements.get(key)
            if el is None:
                continue
            codes = el.codes
            nested = el.kind in (COMPLEX, RESOURCE)
            if codes is None and not nested:
                continue
            for item in value if isinstance(value, list) else (value,):
                if codes is not None and isinstance(item, str):
                    if item not in codes:
                        return False
                elif nested and isinstance(item, dict):
                    target = _nested_type(table, el, item)
                    if target is not None:
                        stack.append((item, target))
    return True


def _nested_type(table: Any, el: Any, item: dict[str, Any]) -> TypeInfo | None:
    """The type of a nested element's value: a contained resource's own type (None for shapes
    the models do not check), else the element's type."""
    rt = item.get("resourceType")
    if el.kind == RESOURCE or rt:
        if rt in R4_ONLY_SHAPES or rt not in R4_RESOURCE_TYPES:
            return None
        return table.resource(rt)
    return table.child(el)


def check_codes(data: dict[str, Any], ti: TypeInfo, path: str, issues: list[Issue]) -> None:
    """Report code values outside a required binding's value set (fhir.resources records the
    allowed values, the schema table carries them, nothing else enforces them)."""
    table = schema()
    elements = ti.elements
    for key, value in data.items():
        el = elements.get(key)
        if el is None or (el.codes is None and el.kind not in (COMPLEX, RESOURCE)):
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{path}.{key}" + (f"[{i}]" if isinstance(value, list) else "")
            if el.codes is not None and isinstance(item, str) and item not in el.codes:
                issues.append(Issue("error", "code-invalid",
                                    f"{where}: '{item}' is not one of {', '.join(sorted(el.codes))}", where))
            elif isinstance(item, dict) and el.kind in (COMPLEX, RESOURCE):
                target = _nested_type(table, el, item)
                if target is not None:
                    check_codes(item, target, where, issues)
