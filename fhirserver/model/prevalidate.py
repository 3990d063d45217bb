"""A quick structural walk that proves a body is accepted by the R4B models, so that the
models (a third of a write's CPU) only run on bodies it cannot vouch for.

The walk is one-sided: True means the models' ``model_validate`` surely succeeds; False means
only "not sure", and the caller runs the models exactly as before, so every error message comes
from them. It therefore accepts only the plain shapes it fully understands and says "not sure"
to everything else: unknown or aliased keys, a value of the wrong JSON type (``1`` for a
boolean, ``true`` for an integer), nulls in lists, ``fhir_comments``, a ``_x`` companion of
anything but a known primitive, contained resources without a known R4B ``resourceType``, leap
seconds and ``uuid`` values. It follows the elements the models know (the table's
``model_elements``: R4B, before the R4 differences are patched in). What it checks mirrors
fhir_core (``types.py``: the primitive patterns, ranges and date parsing;
``fhirabstractmodel.py``: ``extra="forbid"``, ``reject_null_complex_elements``,
``_validate_required_primitive_elements``, ``_validate_one_of_many``) and the R4B
``FHIRPrimitiveExtension`` validator; tests/model/test_fast_validation.py compares it with the
models over the HL7 examples, Synthea and systematic mutations of both.

Each model class's rules are derived once, from the schema table and the class's fields, and
kept in the table's per-type memo (nothing is built at import)."""
from __future__ import annotations

import datetime
import functools
import re
from decimal import Decimal
from typing import Any, Callable

from fhirserver.model.schema import COMPLEX, PRIM, RESOURCE, XHTML, schema
from fhirserver.model.types import R4_ONLY_SHAPES, R4_RESOURCE_TYPES

_MEMO_KEY = "prevalidate"
# how a key's value is checked
_K_PRIM, _K_COMPLEX, _K_RESOURCE, _K_PRIM_EXT, _K_RESOURCE_TYPE = range(5)
_INT_MIN, _INT_MAX = -2147483648, 2147483647

Check = Callable[[Any], bool]


class _Spec:
    """What one model class accepts: `fields` JSON key -> (how, is_list, arg, choice group);
    `required` keys that must hold a value; `required_choices` groups needing one member."""

    __slots__ = ("fields", "required", "required_choices")

    def __init__(self) -> None:
        self.fields: dict[str, tuple[int, bool, Any, str | None]] = {}
        self.required: tuple[str, ...] = ()
        self.required_choices: tuple[str, ...] = ()


def surely_valid(data: dict[str, Any], resource_type: str) -> bool:
    """True only when the R4B model of `resource_type` surely accepts `data` (a body whose
    strings and numbers `text.value_issues` passed: no lone surrogates, no endless decimals);
    True also says the other checks of a write find nothing in `data`: no nulls or empty
    values, no code outside a required binding."""
    if resource_type in R4_ONLY_SHAPES:
        return False
    try:
        spec = _resource_spec(resource_type)
    except Exception:  # noqa: BLE001 - a type the walk cannot describe: the models decide
        return False
    if spec is None:
        return False
    try:
        return _walk(data, spec)
    except Exception:  # noqa: BLE001 - a shape the walk did not foresee: the models decide
        return False


def _walk(data: dict[str, Any], spec: _Spec) -> bool:
    stack: list[tuple[Any, _Spec]] = [(data, spec)]
    pop, push = stack.pop, stack.append
    while stack:
        node, spec = pop()
        if not node:
            return False
        fields = spec.fields
        seen: set[str] | None = None
        for key, value in node.items():
            field = fields.get(key)
            if field is None or value is None:
                return False
            how, is_list, arg, choice = field
            if choice is not None:
                if seen is None:
                    seen = {choice}
                elif choice in seen:
                    return False  # two values of one choice[x]
                else:
                    seen.add(choice)
            if is_list:
                if type(value) is not list or not value:
                    return False
                items = value
            elif type(value) is list:
                return False
            else:
                items = (value,)
            if how == _K_PRIM:
                for item in items:
                    if item is None or not arg(item):
                        return False
            elif how == _K_COMPLEX:
                for item in items:
                    if type(item) is not dict:
                        return False
                    push((item, arg))
            elif how == _K_RESOURCE:
                for item in items:
                    if type(item) is not dict:
                        return False
                    inner = _resource_spec(item.get("resourceType"))
                    if inner is None:
                        return False
                    push((item, inner))
            elif how == _K_PRIM_EXT:
                for item in items:
                    if item is None and is_list:
                        continue  # a placeholder lining the list up with its values
                    if type(item) is not dict:
                        return False
                    push((item, arg))
            elif value != arg:  # resourceType
                return False
        for key in spec.required:
            if key not in node:
                return False
        for group in spec.required_choices:
            if seen is None or group not in seen:
                return False
    return True


# -- the rules of one class ----------------------------------------------------------------------
def _resource_spec(resource_type: Any) -> _Spec | None:
    if not isinstance(resource_type, str) or resource_type not in R4_RESOURCE_TYPES \
            or resource_type in R4_ONLY_SHAPES:
        return None
    return _spec(schema().model_class(resource_type))


def _spec(cls: Any) -> _Spec:
    """The rules of an R4B model class, built on first use (each class once: types nest in
    cycles, so the entry is stored before its fields are filled)."""
    ti = schema().type_info(cls)
    spec = ti.memo.get(_MEMO_KEY)
    if spec is None:
        spec = ti.memo[_MEMO_KEY] = _Spec()
        _fill(spec, cls, ti)
    return spec


def _fill(spec: _Spec, cls: Any, ti: Any) -> None:
    model_fields = cls.model_fields
    by_alias = {(f.alias or n): (n, f) for n, f in model_fields.items()}
    fields: dict[str, tuple[int, bool, Any, str | None]] = {}
    choices: dict[str, str] = {}  # alias -> group, from the models' own one-of-many lists
    instance = cls.model_construct()
    for group, names in instance.get_one_of_many_fields().items():
        for name in names:
            finfo = model_fields[name]
            choices[finfo.alias or name] = group
    for name, el in (ti.model_elements or {}).items():
        found = by_alias.get(name)
        if found is None:
            continue
        fname, finfo = found
        extra = finfo.json_schema_extra if isinstance(finfo.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        group = choices.get(name) or el.choice
        if el.kind in (PRIM, XHTML):
            check = _primitives().get(el.prim or "", _never)
            if el.codes is not None:
                check = _coded(check, el.codes)
            fields[name] = (_K_PRIM, el.is_list, check, group)
            companion = by_alias.get("_" + name)
            if companion is not None and companion[0] == fname + "__ext":
                fields["_" + name] = (_K_PRIM_EXT, el.is_list, _primitive_extension_spec(), None)
        elif el.kind == COMPLEX:
            child = el.model
            if isinstance(child, str) or child.has_resource_base():
                continue  # an R4-only shape, or a resource where an element goes: not sure
            fields[name] = (_K_COMPLEX, el.is_list, _spec(child), group)
        elif el.kind == RESOURCE:
            fields[name] = (_K_RESOURCE, el.is_list, None, group)
    if cls.has_resource_base():
        fields["resourceType"] = (_K_RESOURCE_TYPE, False, cls.get_resource_type(), None)
    required = set()
    for fname, finfo in model_fields.items():
        extra = finfo.json_schema_extra if isinstance(finfo.json_schema_extra, dict) else {}
        if finfo.is_required() or extra.get("element_required"):
            required.add(finfo.alias or fname)
    for fname, _ext in instance.get_required_fields():
        required.add(model_fields[fname].alias or fname)
    spec.required = tuple(sorted(required))
    groups = set()
    for alias, group in choices.items():
        extra = model_fields[by_alias[alias][0]].json_schema_extra
        if isinstance(extra, dict) and extra.get("one_of_many_required"):
            groups.add(group)
    spec.required_choices = tuple(sorted(groups))
    spec.fields = fields  # last: a build cut short leaves a spec that accepts nothing


def _primitive_extension_spec() -> _Spec:
    """The rules of a ``_x`` companion (fhir.resources' FHIRPrimitiveExtension): an id and/or
    extensions, nothing else (its validator wants one of them; an empty object is refused)."""
    from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension

    ti = schema().type_info(FHIRPrimitiveExtension)
    spec = ti.memo.get(_MEMO_KEY)
    if spec is None:
        spec = ti.memo[_MEMO_KEY] = _Spec()
        extension = schema().model_class("Extension")
        annotation = str(FHIRPrimitiveExtension.model_fields["extension"].annotation)
        if "ExtensionType" in annotation:
            spec.fields = {"id": (_K_PRIM, False, _string, None),
                           "extension": (_K_COMPLEX, True, _spec(extension), None)}
    return spec


# -- primitive values (fhir_core/types.py) -------------------------------------------------------
_STRING_SPACE = re.compile("[ \r\n\t]")
_CODE = re.compile(r"[^\s]+(?: [^\s]+)*")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64_SPACE = re.compile(r"[ \r\n\t]+")


def _coded(check: Check, codes: frozenset[str]) -> Check:
    """A code element with a required binding: its value must also be one of the codes (what
    validate.check_codes reports otherwise)."""
    def coded(value: Any) -> bool:
        return check(value) and type(value) is str and value in codes
    return coded


def _never(value: Any) -> bool:
    return False


def _string(value: Any) -> bool:
    # pydantic searches (not anchors) "[ \r\n\t\S]+" with its own \s: some such character must
    # be there; a string of other (Unicode) whitespace only is left to the models
    return type(value) is str and value != "" and (not value.isspace() or _STRING_SPACE.search(value) is not None)


def _any_text(value: Any) -> bool:
    # markdown "\s*(\S|\s)*", uri/canonical "\S*" (searched: they match anything), url and
    # xhtml (plain str): every string passes
    return type(value) is str and value != ""


def _code(value: Any) -> bool:
    # "^[^\s]+(\s[^\s]+)*$": single spaces only (Python's \s covers more than pydantic's, so
    # what passes here passes there; fullmatch lets no "$" match before a final newline)
    return type(value) is str and _CODE.fullmatch(value) is not None


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _integer(value: Any) -> bool:
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _unsigned_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _INT_MAX


def _positive_int(value: Any) -> bool:
    return type(value) is int and 1 <= value <= _INT_MAX


def _base64(value: Any) -> bool:
    # pydantic decodes with base64.b64decode (non-strict: whitespace skipped): canonical
    # base64, with line breaks at most, is what surely decodes
    if type(value) is not str or not value:
        return False
    if _BASE64.fullmatch(value) is not None:
        return True
    return _BASE64.fullmatch(_B64_SPACE.sub("", value)) is not None


def _calendar(value: str) -> bool:
    """A full YYYY-MM-DD prefix names a real day (the patterns only bound month and day)."""
    try:
        datetime.date(int(value[0:4]), int(value[5:7]), int(value[8:10]))
    except ValueError:
        return False
    return True


@functools.cache
def _primitives() -> dict[str, Check]:
    """The check of each FHIR primitive type, built on first use from fhir_core's own compiled
    patterns (those it applies with Python's fullmatch, so they agree exactly)."""
    from fhir_core import constraints
    from fhir_core.types import Date, DateTime, Decimal as FhirDecimal, Instant, Oid, Time

    date_re, date_time_re, instant_re = Date.pattern, DateTime.pattern, Instant.pattern
    time_re, decimal_re, oid_re = Time.pattern, FhirDecimal.pattern, Oid.pattern
    id_re = None
    if constraints.TYPES_ID_PATTERN == r"^[A-Za-z0-9\-.]+$" and isinstance(constraints.TYPES_ID_MAX_LENGTH, int):
        id_re = re.compile(r"[A-Za-z0-9\-.]{1,%d}" % constraints.TYPES_ID_MAX_LENGTH)

    def id_(value: Any) -> bool:
        return type(value) is str and id_re is not None and id_re.fullmatch(value) is not None

    def decimal(value: Any) -> bool:
        # fhir_core matches str(value) against its pattern and builds the Decimal from that
        if type(value) is bool or not isinstance(value, (int, float, Decimal)):
            return False
        try:
            text = str(value)
        except ValueError:  # an int too long to print
            return False
        return decimal_re.fullmatch(text) is not None

    def date(value: Any) -> bool:
        if type(value) is not str or date_re.fullmatch(value) is None:
            return False
        return len(value) < 10 or _calendar(value)

    def date_time(value: Any) -> bool:
        if type(value) is not str or date_time_re.fullmatch(value) is None:
            return False
        if len(value) < 10:
            return True  # a year or year-month: fhir_core keeps the string
        # a leap second takes fhir_core's other road: left to the models
        return _calendar(value) and (len(value) == 10 or value[17:19] != "60")

    def instant(value: Any) -> bool:
        if type(value) is not str or instant_re.fullmatch(value) is None:
            return False
        return _calendar(value) and value[17:19] != "60"

    def time(value: Any) -> bool:
        return type(value) is str and time_re.fullmatch(value) is not None and value[6:8] != "60"

    def oid(value: Any) -> bool:
        return type(value) is str and oid_re.fullmatch(value) is not None

    return {
        "string": _string, "markdown": _any_text, "uri": _any_text, "url": _any_text,
        "canonical": _any_text, "xhtml": _any_text, "code": _code, "id": id_,
        "boolean": _boolean, "integer": _integer, "unsignedInt": _unsigned_int,
        "positiveInt": _positive_int, "decimal": decimal, "date": date, "dateTime": date_time,
        "instant": instant, "time": time, "oid": oid, "base64Binary": _base64,
    }
