"""The one schema table of FHIR R4 the model package works from: for every type its elements
in order (JSON name -> kind, primitive JSON type, cardinality, complex type, choice group,
required-binding codes). XML conversion, FHIRPath Patch and code validation all ask this table,
so they agree on the R4 shape.

The table comes from the fhir.resources R4B pydantic models: each model class's
``model_fields`` (the ``element_property`` ones, by JSON alias), with the annotations unwrapped
(``Optional``/``List``/``Annotated`` with fhir_core's primitive markers, ``abc.<Name>Type``
placeholders naming the model class) and ordered by ``elements_sequence()``. R4B is R4 for almost
every type; what differs lives in ``data/r4_schema.json`` (see its ``_about``): the R4 types R4B
dropped or reshaped, as a compact table generated from the R4 4.0.1 StructureDefinitions, and
the elements R4B added or removed (written by gen_schema.py, `make schema`). Nothing is read or built at import: the first use builds what
it asks for, and the table is cached for the process (`schema()`)."""
from __future__ import annotations

import functools
import importlib
import json
import re
import types
import typing
from importlib import resources
from typing import Any, Union, get_args, get_origin

from fhirserver.model.types import R4_RESOURCE_TYPES

# element kinds
PRIM = 1  # primitive: JSON scalar (XML element with @value)
COMPLEX = 2  # complex datatype / backbone element
RESOURCE = 3  # a resource (contained, Bundle.entry.resource ...), typed by its resourceType
XHTML = 4  # Narrative.div

# JSON value types of primitives
J_STR, J_BOOL, J_INT, J_DEC = 0, 1, 2, 3
_PRIMITIVE_JSON = {"boolean": J_BOOL, "integer": J_INT, "positiveInt": J_INT, "unsignedInt": J_INT,
                   "decimal": J_DEC}
_CHOICE_PREFIX = re.compile(r"[a-z]+(?:Value)?")


class Element:
    """One element of a type. `model` is the type of a COMPLEX element: an R4B model class or a
    path in the R4-only table; `choice` the group of a choice element (``deceased`` for
    ``deceasedBoolean``); `codes` the values a required binding allows (None: any); `prim` the
    FHIR primitive type of a PRIM element (``dateTime``, ``id`` ...: what its value must match)."""

    __slots__ = ("name", "kind", "jtype", "is_list", "model", "choice", "codes", "prim")

    def __init__(self, name: str, kind: int, jtype: int, is_list: bool, model: Any,
                 choice: str | None = None, codes: frozenset[str] | None = None,
                 prim: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.jtype = jtype
        self.is_list = is_list
        self.model = model
        self.choice = choice
        self.codes = codes
        self.prim = prim

    @property
    def primitive(self) -> bool:
        return self.kind in (PRIM, XHTML)


class TypeInfo:
    """A type's elements by JSON name and in the order R4 serialises them; `summary` the
    elements of its `_summary=true` form (None: not known), `required` those with min 1;
    `model_elements` those its R4B model class validates (`elements` before the R4 differences
    are patched in; None for the R4-only table's types)."""

    __slots__ = ("name", "is_resource", "elements", "order", "summary", "required", "memo",
                 "model_elements")

    def __init__(self, name: str, is_resource: bool, elements: dict[str, Element], order: list[str],
                 summary: frozenset[str] | None = None, required: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.is_resource = is_resource
        self.elements = elements
        self.order = tuple(order)
        self.summary = summary
        self.required = required
        self.model_elements: dict[str, Element] | None = None
        self.memo: dict[str, Any] = {}  # what a consumer derives from the type once (its XML tags ...)

    def is_choice(self, base: str) -> bool:
        return any(e.choice == base for e in self.elements.values())


def _load_data() -> dict[str, Any]:
    with resources.files("fhirserver.model").joinpath("data/r4_schema.json").open("rb") as f:
        return json.load(f)


def _codes(extra: dict[str, Any]) -> frozenset[str] | None:
    """Required-binding values: fhir.resources lists each code element's values (`enum_values`,
    with "+" when the binding is extensible) without enforcing them."""
    enum = extra.get("enum_values")
    allowed = frozenset(enum) if enum and "+" not in enum else None
    if allowed and "mime" in allowed:  # CapabilityStatement.format: a MimeType, mis-listed
        return None
    return allowed


class Schema:
    """The table, filled type by type on first use (entries never change once made)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """`data`: R4's differences (default: ``data/r4_schema.json``); the generator of that
        file passes empty ones to see the R4B models as they are."""
        from fhir.resources.R4B import get_fhir_model_class
        from fhir.resources.R4B.resource import Resource
        from fhir_core.constraints import FHIR_PRIMITIVES_MAPS

        if data is None:
            data = _load_data()
        self.r4_only: dict[str, str] = data["r4_only"]
        self._patches = {k: (tuple(v[0]), tuple(tuple(a) for a in v[1])) for k, v in data["r4b_patches"].items()}
        self._get_class = get_fhir_model_class
        self._resource_cls = Resource
        self._prim = FHIR_PRIMITIVES_MAPS
        self._types: dict[Any, TypeInfo] = {}
        self._classes: dict[str, Any] = {}

    # -- lookups -------------------------------------------------------------------------------
    def model_class(self, name: str) -> Any:
        """The R4B model class named `name` (or a dotted ``fhir.resources.R4B.x.Y`` path)."""
        cls = self._classes.get(name)
        if cls is None:
            if "." in name:
                mod, _, attr = name.rpartition(".")
                cls = getattr(importlib.import_module(mod), attr)
            else:
                cls = self._get_class(name)
            self._classes[name] = cls
        return cls

    def type_info(self, model: Any) -> TypeInfo:
        """The type of an R4B model class or an R4-only table path."""
        ti = self._types.get(model)
        if ti is None:
            ti = self._table_type(model) if isinstance(model, str) else self._model_type(model)
            self._types[model] = ti
        return ti

    def resource(self, rtype: Any) -> TypeInfo | None:
        """An R4 resource type, or None when `rtype` is not one."""
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            return None
        return self.type_info(rtype if rtype in self.r4_only else self.model_class(rtype))

    def named(self, name: Any) -> TypeInfo | None:
        """A resource or datatype by name (Element, Extension, HumanName ...); None if unknown."""
        if not isinstance(name, str) or not name:
            return None
        if name in self.r4_only:
            return self.type_info(name)
        try:
            return self.type_info(self.model_class(name))
        except Exception:  # noqa: BLE001 - a name from client input that names no type
            return None

    def child(self, element: Element | None) -> TypeInfo | None:
        """The type of a COMPLEX element (None for primitives and resources)."""
        if element is None or element.kind != COMPLEX:
            return None
        return self.type_info(element.model)

    # -- building ------------------------------------------------------------------------------
    def _resolve(self, finfo: Any) -> tuple[int, int, bool, Any]:
        """(kind, json type, is_list, model class or primitive name) of one pydantic field."""
        prim_map = self._prim
        is_list = False

        def walk(ann: Any, meta: list) -> Any:
            nonlocal is_list
            origin = get_origin(ann)
            if origin is typing.Annotated:
                return walk(get_args(ann)[0], meta + list(ann.__metadata__))
            if origin is Union or origin is types.UnionType:
                for arg in get_args(ann):
                    if arg is not type(None):
                        found = walk(arg, meta)
                        if found is not None:
                            return found
                return None
            if origin is list:
                is_list = True
                return walk(get_args(ann)[0], meta)
            for m in meta:  # fhir_core markers: Id(), Uri(), Date(), Xhtml(), ...
                name = prim_map.get(type(m))
                if isinstance(name, str):
                    return ("P", name)
            model_path = getattr(ann, "_model_klass", None)  # abc.<Name>Type
            if isinstance(model_path, str):
                return ("C", self.model_class(model_path))
            try:
                name = prim_map.get(ann)  # bare str / bool / int / Decimal ...
            except TypeError:
                name = None
            return ("P", name) if isinstance(name, str) else None

        found = walk(finfo.annotation, list(finfo.metadata or ()))
        if found is None:
            raise TypeError(f"cannot resolve the FHIR type of {finfo.annotation!r}")
        what, val = found
        if what == "P":
            if val == "xhtml":
                return XHTML, J_STR, is_list, val
            return PRIM, _PRIMITIVE_JSON.get(val, J_STR), is_list, val
        if val is self._resource_cls:
            return RESOURCE, J_STR, is_list, None
        return COMPLEX, J_STR, is_list, val

    def _for_code(self, name: str, code: str, is_list: bool, choice: str | None = None) -> Element:
        """An element from an R4 type code (primitive name, datatype, table path)."""
        if code == "xhtml":
            return Element(name, XHTML, J_STR, is_list, None, choice, prim=code)
        if code[:1].islower():
            return Element(name, PRIM, _PRIMITIVE_JSON.get(code, J_STR), is_list, None, choice, prim=code)
        if code == "Resource":
            return Element(name, RESOURCE, J_STR, is_list, None, choice)
        model = code if code in self.r4_only else self.model_class(code)
        return Element(name, COMPLEX, J_STR, is_list, model, choice)

    def _model_type(self, cls: Any) -> TypeInfo:
        elements: dict[str, Element] = {}
        required: set[str] = set()
        for fname, finfo in cls.model_fields.items():
            extra = finfo.json_schema_extra
            if finfo.is_required() or (isinstance(extra, dict) and extra.get("element_required")):
                required.add(finfo.alias or fname)
            if not isinstance(extra, dict) or not extra.get("element_property"):
                continue
            name = finfo.alias or fname
            kind, jtype, is_list, model = self._resolve(finfo)
            prim = model if kind in (PRIM, XHTML) else None
            choice = extra.get("one_of_many")
            elements[name] = Element(name, kind, jtype, is_list, None if prim else model,
                                     choice if isinstance(choice, str) else None, _codes(extra), prim)
        order = [n for n in cls.elements_sequence() if n in elements]
        order += [n for n in elements if n not in order]
        model_elements = elements
        patch = self._patches.get(cls.__name__)
        if patch is not None and cls.__module__.startswith("fhir.resources.R4B."):
            removed, added = patch
            elements = dict(elements)
            order = [n for n in order if n not in removed]
            for n in removed:
                elements.pop(n, None)
            for n, code in added:
                # a choice type: after the last sibling of the choice
                prefix = _CHOICE_PREFIX.match(n).group(0)
                pos = max(i for i, o in enumerate(order) if o.startswith(prefix)) + 1
                order.insert(pos, n)
                elements[n] = self._for_code(n, code, False, prefix)
        ti = TypeInfo(cls.__name__, issubclass(cls, self._resource_cls), elements, order,
                      frozenset(cls.summary_elements_sequence()), frozenset(required))
        ti.model_elements = model_elements
        return ti

    def _table_type(self, path: str) -> TypeInfo:
        base, *items = self.r4_only[path].split()
        base_ti = self.type_info(self.model_class(base))
        elements = dict(base_ti.elements)
        order = list(base_ti.order)
        for item in items:
            name, _, code = item.partition(":")
            is_list = code.endswith("*")
            code = code.rstrip("*")
            if code == "@":
                code = f"{path}.{name}"
            elif code[:1] == "@":
                code = code[1:]
            elements[name] = self._for_code(name, code, is_list)
            order.append(name)
        return TypeInfo(path, path in R4_RESOURCE_TYPES, elements, order)


@functools.cache
def schema() -> Schema:
    """The process's table: created on first use (never at import), then shared; its entries
    are derived from the installed models and never change."""
    return Schema()
