"""FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html): a ``Parameters`` resource with one
``operation`` parameter per change, applied by :func:`apply_fhirpath_patch` to a copy of the
resource (never mutating its arguments); failures raise :class:`PatchError`.

FHIRPath selection is done by fhirpathpy (evaluated with the R4 model so choice elements such
as ``Observation.value`` resolve).  fhirpathpy's raw result nodes carry the JSON location of each
selected node (``Patient.name[0].given[1]``); that location is mapped back onto the resource
dict so the operation can be applied there.  Element cardinality and types, needed to build
values from nested ``part``s and to decide whether an added element is a list, come from the
fhir.resources R4B models when they are importable (R4B has the R4 shape for almost every
element, through the one schema table ``fhirserver.model.schema``); for an unknown type a small
heuristic is used.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field as dc_field
from decimal import Decimal
from typing import Any, NamedTuple

from fhirserver.model.fhirpath import FhirPathSyntaxError, ResourceNode, fhirpath
from fhirserver.model.patch.errors import PatchError, malformed as _malformed, unprocessable as _unprocessable
from fhirserver.model.schema import TypeInfo, schema

# --------------------------------------------------------------------------------------------
# Model information (cardinality, element types) from the fhir.resources R4B classes
# --------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    name: str  # the JSON name
    is_list: bool
    cls: Any  # pydantic model class of a complex type, None for primitives / Resource
    primitive: bool
    choice_base: str | None  # "deceased" for deceasedBoolean


# Used when no model class is known: element names that are (nearly) always repeating.
_HEURISTIC_LIST_ELEMENTS = frozenset(
    {"extension", "modifierExtension", "contained", "coding", "given", "prefix", "suffix", "line"}
)

class _Model:
    """The schema table (fhirserver.model.schema) as patch needs it: a type's fields with their
    cardinality, complex type, primitive-ness and choice group. A "class" here is a schema
    TypeInfo; None means the type is unknown (then a small heuristic decides lists)."""

    def named_class(self, name: Any) -> TypeInfo | None:
        return schema().named(name)

    def element_class(self) -> TypeInfo | None:
        return self.named_class("Element")

    def fields(self, cls: TypeInfo | None) -> dict[str, _Field]:
        if cls is None:
            return {}
        found = cls.memo.get("patch")
        if found is None:
            table = schema()
            found = cls.memo["patch"] = {
                name: _Field(name, el.is_list, table.child(el), el.primitive, el.choice)
                for name, el in cls.elements.items()
            }
        return found

    def field(self, cls: TypeInfo | None, name: str) -> _Field | None:
        return self.fields(cls).get(name)

    def choice_field(self, cls: TypeInfo | None, base: str, suffix: str | None) -> _Field | None:
        """The field ``base + suffix`` when ``base`` is a choice element ``base[x]`` of cls."""
        if not suffix:
            return None
        f = self.field(cls, base + suffix)
        if f is not None and f.choice_base == base:
            return f
        return None

    def is_choice_base(self, cls: TypeInfo | None, base: str) -> bool:
        return any(f.choice_base == base for f in self.fields(cls).values())


_MODEL = _Model()


def _class_at(root: dict, steps: list) -> Any:
    """The model class of the (complex) element at ``steps``, or None when unknown."""
    cls = _MODEL.named_class(root.get("resourceType"))
    node: Any = root
    for step in steps:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and step < len(node) else None
        else:
            if step.startswith("_"):
                cls = _MODEL.element_class()
            else:
                f = _MODEL.field(cls, step)
                cls = f.cls if f is not None else None
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("resourceType"), str):
            cls = _MODEL.named_class(node["resourceType"])
    return cls


# --------------------------------------------------------------------------------------------
# FHIRPath selection -> locations in the resource dict
# --------------------------------------------------------------------------------------------

# A location is a list of steps from the resource root: dict keys (str) and list indexes (int),
# e.g. ["name", 0, "given", 1] or, for an extension on a primitive, ["_birthDate", "extension", 0].
Steps = list

_SEGMENT = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_TRAILING_MEMBER = re.compile(r"^(?P<parent>.+?)\s*\.\s*(?P<member>[A-Za-z][A-Za-z0-9]*)\s*$", re.S)


_KEYWORD_MEMBERS = re.compile(r"\.(\s*)(div|mod)\b")


def _escape_keyword_members(expression: str) -> str:
    """Narrative.div etc.: element names that are FHIRPath keywords need `backticks` in
    fhirpathpy's grammar; ``Patient.text.div`` (as used by the HL7 patch tests) is rewritten
    to ``Patient.text.`div```.  String literals and delimited identifiers are left alone."""
    if "div" not in expression and "mod" not in expression:
        return expression
    out: list[str] = []
    chunk_start = 0
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch in "'`":
            out.append(_KEYWORD_MEMBERS.sub(r".\1`\2`", expression[chunk_start:i]))
            j = i + 1
            while j < n and expression[j] != ch:
                j += 2 if expression[j] == "\\" else 1
            out.append(expression[i : j + 1])
            i = chunk_start = j + 1
            continue
        i += 1
    out.append(_KEYWORD_MEMBERS.sub(r".\1`\2`", expression[chunk_start:]))
    return "".join(out)


def _evaluate(root: dict, expression: str) -> list:
    fp = fhirpath()
    try:
        fn = fp.compile(_escape_keyword_members(expression), raw=True, strict=True)
    except FhirPathSyntaxError as exc:
        raise _malformed(f"invalid FHIRPath expression {expression!r}: {exc}") from None
    except Exception as exc:
        raise _malformed(f"invalid FHIRPath expression {expression!r}: {exc}") from None
    try:
        return fp.evaluate(fn, root, {"resource": root, "rootResource": root})
    except Exception as exc:
        raise _malformed(f"cannot evaluate FHIRPath expression {expression!r}: {exc}") from None


def _get(root: Any, steps: Steps) -> Any:
    node = root
    for step in steps:
        node = node[step]
    return node


def _resolve_key(obj: dict, name: str) -> str | None:
    if name in obj or "_" + name in obj:
        return name
    # A choice element (Observation.value -> valueQuantity) resolved by fhirpathpy's model.
    n = len(name)
    candidates = {
        k.lstrip("_")
        for k in obj
        if k.lstrip("_").startswith(name) and len(k.lstrip("_")) > n and k.lstrip("_")[n].isupper()
    }
    if len(candidates) == 1:
        return candidates.pop()
    return None


def _steps_from_prop_name(root: dict, prop: str) -> Steps | None:
    """Map a fhirpathpy propName (``Patient.name[0].given[1]``) onto the resource dict."""
    segments = prop.split(".")
    if not segments or segments[0] != root.get("resourceType"):
        return None
    steps: Steps = []
    current: Any = root
    primitive: tuple[dict, str, int | None] | None = None  # where the current primitive lives
    for segment in segments[1:]:
        m = _SEGMENT.match(segment)
        if not m:
            return None
        name, index = m.group(1), (int(m.group(2)) if m.group(2) is not None else None)
        if primitive is not None:
            # Navigating into a primitive (its id / extension): go to the "_name" companion.
            container, pkey, pidx = primitive
            companion = container.get("_" + pkey)
            if pidx is not None:
                companion = companion[pidx] if isinstance(companion, list) and pidx < len(companion) else None
            if not isinstance(companion, dict):
                return None
            del steps[-(2 if pidx is not None else 1):]
            steps.append("_" + pkey)
            if pidx is not None:
                steps.append(pidx)
            current, primitive = companion, None
        if not isinstance(current, dict):
            return None
        key = _resolve_key(current, name)
        if key is None:
            return None
        value = current.get(key)
        if index is not None:
            if isinstance(value, list):
                if index >= len(value):
                    return None
                item = value[index]
            elif value is None and isinstance(current.get("_" + key), list) and index < len(current["_" + key]):
                item = None  # a primitive list whose value is absent (extension only)
            else:
                return None
            steps += [key, index]
        else:
            if isinstance(value, list):
                return None
            item = value
            steps.append(key)
        if isinstance(item, dict):
            current = item
        else:
            primitive = (current, key, index)
            current = item
    return steps


def _find_by_identity(root: dict, target: Any) -> Steps | None:
    stack: list[tuple[Steps, Any]] = [([], root)]
    while stack:
        path, node = stack.pop()
        if node is target:
            return path
        if isinstance(node, dict):
            stack.extend((path + [k], v) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((path + [i], v) for i, v in enumerate(node) if isinstance(v, (dict, list)))
    return None


_MISSING = object()


def _value_at(root: Any, steps: Steps) -> Any:
    node = root
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return _MISSING
        elif not isinstance(node, dict) or step not in node:
            return _MISSING
        node = node[step]
    return node


def _companion_at(root: dict, steps: Steps) -> Any:
    if not steps:
        return _MISSING
    parent_steps, key, index = _split(steps)
    return _value_at(root, parent_steps + ["_" + key] + ([index] if index is not None else []))


# fhirpathpy (2.x) reports a primitive and its "_name" companion (id / extensions) as two
# separate nodes, and a null placeholder of a "_name" list as a node of its own; indexers and
# first()/last()/count() then see too many items.  Unless the expression looks into the id /
# extensions of primitives, evaluate on a view of the resource without the companions.
_NEEDS_COMPANIONS = re.compile(r"\b(extension|id|descendants|children|repeat|hasValue)\b")


def _has_companions(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k.startswith("_") or _has_companions(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_companions(v) for v in node)
    return False


def _stripped_view(node: Any, originals: dict[int, Any]) -> Any:
    """A copy without "_name" keys; ``originals`` maps id(view container) -> real container."""
    if isinstance(node, dict):
        view: Any = {k: _stripped_view(v, originals) for k, v in node.items() if not k.startswith("_")}
    elif isinstance(node, list):
        view = [_stripped_view(v, originals) for v in node]
    else:
        return node
    originals[id(view)] = node
    return view


def _locate(root: dict, node: Any, expression: str, originals: dict[int, Any] | None) -> Steps | None:
    """The location of one fhirpathpy result node; None for a spurious duplicate node."""
    def unmappable() -> PatchError:
        return _malformed(
            f"FHIRPath {expression!r} selects something that is not an element of the resource "
            "(computed values and resolve() are not supported in patch paths)"
        )

    if not isinstance(node, ResourceNode):
        raise unmappable()
    data = node.data
    if originals is not None and isinstance(data, (dict, list)):
        data = originals.get(id(data), data)
    prop = node.propName
    steps = _steps_from_prop_name(root, prop) if isinstance(prop, str) else None
    if steps is not None:
        actual = _value_at(root, steps)
        if isinstance(data, (dict, list)):
            if actual is data:
                return steps
            if not isinstance(actual, (dict, list)) and _companion_at(root, steps) is data:
                return steps  # the id / extension holder of the primitive at steps
        elif data is None:
            if actual is _MISSING or actual is None:
                return steps  # a primitive that only has extensions
            return None  # the null placeholder of a "_name" list
        elif actual is data or (actual is not _MISSING and type(actual) is type(data) and actual == data):
            return steps
    if data is root:
        return []
    if isinstance(data, (dict, list)):
        found = _find_by_identity(root, data)
        if found is not None:
            return found
    raise unmappable()


def _select(root: dict, expression: str) -> list[Steps]:
    """Locations of the distinct elements the expression selects, in result order."""
    originals: dict[int, Any] | None = None
    view = root
    if not _NEEDS_COMPANIONS.search(expression) and _has_companions(root):
        originals = {}
        view = _stripped_view(root, originals)
    out: list[Steps] = []
    seen: set[tuple] = set()
    for node in _evaluate(view, expression):
        steps = _locate(root, node, expression, originals)
        if steps is None:
            continue
        key = tuple(steps)
        if key not in seen:
            seen.add(key)
            out.append(steps)
    return out


def _select_one(root: dict, expression: str, op: str) -> Steps:
    found = _select(root, expression)
    if not found:
        raise _unprocessable(f"{op}: no element found at {expression!r}")
    if len(found) > 1:
        raise _unprocessable(f"{op}: {expression!r} matches {len(found)} elements; it must match exactly one")
    return found[0]


# --------------------------------------------------------------------------------------------
# FHIRPath Patch: parsing the Parameters
# --------------------------------------------------------------------------------------------

_OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
_REQUIRED_PARTS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "index", "value"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_KNOWN_PARTS = frozenset({"type", "path", "name", "value", "index", "source", "destination"})

_PRIMITIVE_TYPES = frozenset(
    {
        "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
        "Instant", "Integer", "Integer64", "Markdown", "Oid", "PositiveInt", "String", "Time",
        "UnsignedInt", "Uri", "Url", "Uuid", "Xhtml",
    }
)


@dataclass
class _ValueSpec:
    kind: str  # "typed" (value[x]), "parts" (nested parts) or "resource"
    data: Any = None
    suffix: str | None = None  # the [x] type of a value[x], e.g. "HumanName"
    companion: Any = None  # "_value[x]" (id / extensions of a primitive value)
    parts: list = dc_field(default_factory=list)


@dataclass
class _Operation:
    number: int
    type: str
    path: str
    name: str | None = None
    value: _ValueSpec | None = None
    index: int | None = None
    source: int | None = None
    destination: int | None = None


def _value_keys(part: dict) -> list[str]:
    return [k for k in part if k.startswith("value") and len(k) > 5 and k[5].isupper()]


def _parse_value(part: dict, where: str) -> _ValueSpec:
    vkeys = _value_keys(part)
    has_parts = "part" in part
    has_resource = "resource" in part
    count = len(vkeys) + has_parts + has_resource
    if count == 0:
        raise _malformed(f"{where}: no value (value[x], part or resource) given")
    if count > 1:
        raise _malformed(f"{where}: more than one of value[x] / part / resource given")
    if vkeys:
        key = vkeys[0]
        data, suffix = part[key], key[5:]
        if data is None:
            raise _malformed(f"{where}: {key} is null")
        if suffix in _PRIMITIVE_TYPES:
            if isinstance(data, (dict, list)):
                raise _malformed(f"{where}: {key} must be a primitive value")
        elif not isinstance(data, dict):
            raise _malformed(f"{where}: {key} must be a JSON object")
        companion = part.get("_" + key)
        if companion is not None and not isinstance(companion, dict):
            raise _malformed(f"{where}: _{key} must be a JSON object")
        return _ValueSpec("typed", data=data, suffix=suffix, companion=companion)
    if has_parts:
        parts = part["part"]
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise _malformed(f"{where}: 'part' must be a non-empty array of objects")
        for i, sub in enumerate(parts):
            name = sub.get("name")
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise _malformed(f"{where}.part[{i}]: missing or invalid element name {name!r}")
            _parse_value(sub, f"{where}.part[{i}] ({name})")  # validate eagerly
        return _ValueSpec("parts", parts=parts)
    resource = part["resource"]
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise _malformed(f"{where}: 'resource' must be a resource")
    return _ValueSpec("resource", data=resource)


def _part_string(part: dict, where: str) -> str:
    vkeys = _value_keys(part)
    if len(vkeys) != 1 or not isinstance(part[vkeys[0]], str) or not part[vkeys[0]].strip():
        raise _malformed(f"{where} must have a non-empty string value (e.g. valueString / valueCode)")
    return part[vkeys[0]].strip()


def _part_int(part: dict, where: str) -> int:
    vkeys = _value_keys(part)
    value = part[vkeys[0]] if len(vkeys) == 1 else None
    # valueInteger normally; a whole-number Decimal (parse_float=Decimal) is tolerated
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"{where} must be an integer (valueInteger)")
    if value < 0:
        raise _malformed(f"{where} must not be negative")
    return value


def _parse_operations(parameters: Any) -> list[_Operation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise _malformed("a FHIRPath Patch must be a Parameters resource")
    params = parameters.get("parameter", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        raise _malformed("Parameters.parameter must be an array")
    operations = []
    for n, param in enumerate(params):
        where = f"operation #{n + 1}"
        if not isinstance(param, dict):
            raise _malformed(f"{where}: parameter is not an object")
        if param.get("name") != "operation":
            raise _malformed(f"{where}: unexpected parameter {param.get('name')!r} (expected 'operation')")
        parts = param.get("part")
        if not isinstance(parts, list) or not parts:
            raise _malformed(f"{where}: an operation needs parts (type, path, ...)")
        by_name: dict[str, dict] = {}
        for part in parts:
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise _malformed(f"{where}: every part needs a name")
            pname = part["name"]
            if pname not in _KNOWN_PARTS:
                raise _malformed(f"{where}: unknown part {pname!r}")
            if pname in by_name:
                raise _malformed(f"{where}: part {pname!r} is repeated")
            by_name[pname] = part
        if "type" not in by_name:
            raise _malformed(f"{where}: missing 'type' part")
        op_type = _part_string(by_name["type"], f"{where}: type")
        if op_type not in _OPERATION_TYPES:
            raise _malformed(f"{where}: unknown operation type {op_type!r}")
        where = f"operation #{n + 1} ({op_type})"
        for required in _REQUIRED_PARTS[op_type]:
            if required not in by_name:
                raise _malformed(f"{where}: missing '{required}' part")
        op = _Operation(n + 1, op_type, _part_string(by_name["path"], f"{where}: path"))
        if op_type == "add":
            op.name = _part_string(by_name["name"], f"{where}: name")
            if not _IDENTIFIER.match(op.name):
                raise _malformed(f"{where}: invalid element name {op.name!r}")
        if op_type in ("add", "insert", "replace"):
            op.value = _parse_value(by_name["value"], f"{where}: value")
        if op_type == "insert":
            op.index = _part_int(by_name["index"], f"{where}: index")
        if op_type == "move":
            op.source = _part_int(by_name["source"], f"{where}: source")
            op.destination = _part_int(by_name["destination"], f"{where}: destination")
        operations.append(op)
    return operations


# --------------------------------------------------------------------------------------------
# FHIRPath Patch: building values
# --------------------------------------------------------------------------------------------


@dataclass
class _Built:
    data: Any
    suffix: str | None = None
    companion: Any = None

    @property
    def primitive(self) -> bool:
        return not isinstance(self.data, dict)


def _build(spec: _ValueSpec, cls: Any, where: str) -> _Built:
    """Turn a value spec into JSON; ``cls`` is the model class expected there (may be None)."""
    if spec.kind == "typed":
        return _Built(copy.deepcopy(spec.data), spec.suffix, copy.deepcopy(spec.companion))
    if spec.kind == "resource":
        return _Built(copy.deepcopy(spec.data), spec.suffix)
    obj: dict[str, Any] = {}
    grouped: dict[str, list[_Built]] = {}
    fields: dict[str, _Field | None] = {}
    for i, sub in enumerate(spec.parts):
        name = sub["name"]
        sub_where = f"{where}.part[{i}] ({name})"
        f = _MODEL.field(cls, name)
        sub_spec = _parse_value(sub, sub_where)
        key = name
        if f is None and sub_spec.kind == "typed":
            choice = _MODEL.choice_field(cls, name, sub_spec.suffix)
            if choice is not None:
                f, key = choice, choice.name
        if f is None and _MODEL.is_choice_base(cls, name):
            raise _unprocessable(f"{sub_where}: {_choice_problem(sub_spec, name)}")
        built = _build(sub_spec, _child_class(f, name), sub_where)
        if f is not None:
            _check_kind(f, built, sub_where)
        grouped.setdefault(key, []).append(built)
        fields[key] = f
    for key, items in grouped.items():
        f = fields[key]
        if f is not None:
            is_list = f.is_list
            if not is_list and len(items) > 1:
                raise _unprocessable(f"{where}: element {key!r} does not repeat but is given {len(items)} times")
        else:
            is_list = len(items) > 1 or key in _HEURISTIC_LIST_ELEMENTS
        if is_list:
            obj[key] = [b.data for b in items]
            if any(b.companion is not None for b in items):
                obj["_" + key] = [b.companion for b in items]
        else:
            obj[key] = items[0].data
            if items[0].companion is not None:
                obj["_" + key] = items[0].companion
    return _Built(obj)


def _choice_problem(spec: _ValueSpec, base: str) -> str:
    if spec.kind != "typed":
        return f"{base}[x] is a choice element; give its value as value[x] so the type is known"
    return f"type {spec.suffix!r} is not allowed for {base}[x]"


def _child_class(f: _Field | None, name: str) -> Any:
    if f is not None:
        return f.cls
    if name in ("extension", "modifierExtension"):
        return _MODEL.named_class("Extension")
    return None


def _check_kind(f: _Field | None, built: _Built, where: str) -> None:
    if f is None:
        return
    if f.primitive and not built.primitive:
        raise _unprocessable(f"{where}: {f.name} is a primitive element but a complex value was given")
    if not f.primitive and built.primitive:
        raise _unprocessable(f"{where}: {f.name} is a complex element but a primitive value was given")


# --------------------------------------------------------------------------------------------
# FHIRPath Patch: mutations on the working copy
# --------------------------------------------------------------------------------------------


def _split(steps: Steps) -> tuple[Steps, str, int | None]:
    """(steps of the containing object, key, list index or None)."""
    if steps and isinstance(steps[-1], int):
        return steps[:-2], steps[-2], steps[-1]
    return steps[:-1], steps[-1], None


def _tidy(container: dict, key: str) -> None:
    """Drop an emptied list and a companion that no longer holds anything."""
    if container.get(key) == []:
        container.pop(key, None)
    companion = container.get("_" + key)
    if companion == {} or (isinstance(companion, list) and all(c is None or c == {} for c in companion)):
        container.pop("_" + key, None)


def _remove(root: dict, steps: Steps) -> None:
    """Delete the element at steps (with its primitive companion) and prune emptied parents."""
    parent_steps, key, index = _split(steps)
    container = _get(root, parent_steps)
    if index is None:
        container.pop(key, None)
        if not key.startswith("_"):
            container.pop("_" + key, None)
    elif key.startswith("_"):
        # an id/extension holder of one item of a primitive list: keep the lists aligned
        holder = container.get(key)
        if isinstance(holder, list) and index < len(holder):
            holder[index] = None
    else:
        items = container.get(key)
        companion = container.get("_" + key)
        if isinstance(items, list) and index < len(items):
            del items[index]
        if isinstance(companion, list) and index < len(companion):
            del companion[index]
    _tidy(container, key)
    if key.startswith("_"):
        _tidy(container, key[1:])
    if parent_steps and isinstance(container, dict) and not container:
        _remove(root, parent_steps)  # FHIR JSON has no empty objects


def _set_companion(container: dict, key: str, index: int | None, companion: Any) -> None:
    if companion is None:
        return
    if index is None:
        container["_" + key] = companion
        return
    holder = container.get("_" + key)
    size = len(container.get(key) or [])
    if not isinstance(holder, list):
        holder = []
        container["_" + key] = holder
    while len(holder) < size:
        holder.append(None)
    holder[index] = companion


def _element_object(root: dict, steps: Steps, create: bool) -> tuple[dict | None, Any]:
    """The dict holding the children of the element at steps, and its model class.

    For a primitive element that is its "_name" companion (only id/extension live there),
    created when ``create`` is set.
    """
    node = _value_at(root, steps)
    if isinstance(node, dict):
        return node, _class_at(root, steps)
    if not steps:
        return None, None
    parent_steps, key, index = _split(steps)
    container = _get(root, parent_steps)
    if index is None:
        companion = container.get("_" + key)
        if not isinstance(companion, dict):
            if not create:
                return None, None
            companion = {}
            container["_" + key] = companion
        return companion, _MODEL.element_class()
    holder = container.get("_" + key)
    companion = holder[index] if isinstance(holder, list) and index < len(holder) else None
    if not isinstance(companion, dict):
        if not create:
            return None, None
        companion = {}
        _set_companion(container, key, index, companion)
    return companion, _MODEL.element_class()


def _op_add(root: dict, op: _Operation) -> None:
    target_steps = _select_one(root, op.path, "add")
    node = _value_at(root, target_steps)
    if not isinstance(node, dict) and op.name not in ("extension", "id"):
        raise _unprocessable(f"add: {op.path!r} is a primitive; only 'id' or 'extension' can be added to it")
    target, cls = _element_object(root, target_steps, create=True)
    assert target is not None and op.value is not None
    where = f"operation #{op.number} (add)"
    name = op.name or ""
    f = _MODEL.field(cls, name)
    key = name
    if f is None and op.value.kind == "typed":
        choice = _MODEL.choice_field(cls, name, op.value.suffix)
        if choice is not None:
            f, key = choice, choice.name
    if f is None and _MODEL.is_choice_base(cls, name):
        raise _unprocessable(f"{where}: {_choice_problem(op.value, name)}")
    built = _build(op.value, _child_class(f, name), f"{where}: value ({name})")
    _check_kind(f, built, where)
    if f is not None and f.choice_base:
        clash = [k for k in target if k != key and (_MODEL.field(cls, k) or _NO_FIELD).choice_base == f.choice_base]
        if clash:
            raise _unprocessable(f"{where}: {f.choice_base}[x] already has a value ({clash[0]})")
    existing = target.get(key)
    if f is not None:
        is_list = f.is_list
    else:
        is_list = isinstance(existing, list) or key in _HEURISTIC_LIST_ELEMENTS
    if is_list:
        if existing is None:
            existing = []
            target[key] = existing
        elif not isinstance(existing, list):
            raise _unprocessable(f"{where}: {key!r} is not a list in this resource")
        existing.append(built.data)
        holder = target.get("_" + key)
        if isinstance(holder, list) or built.companion is not None:
            _set_companion(target, key, len(existing) - 1, built.companion)
            holder = target.get("_" + key)
            while isinstance(holder, list) and len(holder) < len(existing):
                holder.append(None)
        return
    if existing is not None:
        raise _unprocessable(f"{where}: {key!r} already has a value; use replace")
    target[key] = built.data
    _set_companion(target, key, None, built.companion)


_NO_FIELD = _Field("", False, None, True, None)


def _list_location(root: dict, op: _Operation, allow_empty: bool) -> tuple[Steps, str, Any]:
    """(container steps, list key, item class) of the list an insert/move path designates."""
    found = _select(root, op.path)
    if found:
        places = {(tuple(_split(s)[0]), _split(s)[1]) for s in found}
        if len(places) > 1:
            raise _unprocessable(f"{op.type}: {op.path!r} selects elements of more than one list")
        parent_steps, key, index = _split(found[0])
        if index is None or key.startswith("_"):
            raise _unprocessable(f"{op.type}: {op.path!r} is not a repeating element")
        return parent_steps, key, _class_at(root, parent_steps + [key])
    if not allow_empty:
        raise _unprocessable(f"{op.type}: no list found at {op.path!r}")
    # The list does not exist yet: find its parent from "<parent expression>.<member>".
    m = _TRAILING_MEMBER.match(op.path)
    if not m:
        raise _unprocessable(f"{op.type}: no list found at {op.path!r}")
    parent_steps = _select_one(root, m.group("parent"), op.type)
    member = m.group("member")
    target, cls = _element_object(root, parent_steps, create=False)
    if target is None:
        if member not in ("extension",):
            raise _unprocessable(f"{op.type}: no list found at {op.path!r}")
        target, cls = _element_object(root, parent_steps, create=True)
    f = _MODEL.field(cls, member)
    if f is not None and not f.is_list:
        raise _unprocessable(f"{op.type}: {op.path!r} is not a repeating element")
    target_steps = _find_by_identity(root, target)
    assert target_steps is not None
    return target_steps, member, _child_class(f, member)


def _op_insert(root: dict, op: _Operation) -> None:
    parent_steps, key, item_cls = _list_location(root, op, allow_empty=True)
    container = _get(root, parent_steps)
    items = container.get(key)
    size = len(items) if isinstance(items, list) else 0
    assert op.index is not None and op.value is not None
    if op.index > size:
        raise _unprocessable(f"insert: index {op.index} is beyond the end of the list ({size} items)")
    where = f"operation #{op.number} (insert)"
    built = _build(op.value, item_cls, f"{where}: value")
    cls = _class_at(root, parent_steps)
    _check_kind(_MODEL.field(cls, key), built, where)
    if not isinstance(items, list):
        items = []
        container[key] = items
    items.insert(op.index, built.data)
    holder = container.get("_" + key)
    if isinstance(holder, list):
        while len(holder) < size:
            holder.append(None)
        holder.insert(op.index, built.companion)
    elif built.companion is not None:
        _set_companion(container, key, op.index, built.companion)


def _op_move(root: dict, op: _Operation) -> None:
    parent_steps, key, _ = _list_location(root, op, allow_empty=False)
    container = _get(root, parent_steps)
    items = container[key]
    assert op.source is not None and op.destination is not None
    for label, idx in (("source", op.source), ("destination", op.destination)):
        if idx >= len(items):
            raise _unprocessable(f"move: {label} index {idx} is out of range (list has {len(items)} items)")
    items.insert(op.destination, items.pop(op.source))
    holder = container.get("_" + key)
    if isinstance(holder, list):
        while len(holder) < len(items):
            holder.append(None)
        holder.insert(op.destination, holder.pop(op.source))


def _op_delete(root: dict, op: _Operation) -> None:
    found = _select(root, op.path)
    if not found:
        return  # deleting something that is not there is not an error
    if len(found) > 1:
        raise _unprocessable(f"delete: {op.path!r} matches {len(found)} elements; only one can be deleted")
    if not found[0]:
        raise _unprocessable("delete: the resource itself cannot be deleted by a patch")
    _remove(root, found[0])


def _op_replace(root: dict, op: _Operation) -> None:
    steps = _select_one(root, op.path, "replace")
    if not steps:
        raise _unprocessable("replace: the resource itself cannot be replaced by a patch")
    assert op.value is not None
    where = f"operation #{op.number} (replace)"
    parent_steps, key, index = _split(steps)
    container = _get(root, parent_steps)
    if key.startswith("_"):
        raise _unprocessable(f"replace: {op.path!r} is not a replaceable element")
    cls = _class_at(root, parent_steps)
    f = _MODEL.field(cls, key)
    new_key = key
    if f is not None and f.choice_base and op.value.kind == "typed" and index is None:
        choice = _MODEL.choice_field(cls, f.choice_base, op.value.suffix)
        if choice is None:
            raise _unprocessable(f"{where}: type {op.value.suffix!r} is not allowed for {f.choice_base}[x]")
        f, new_key = choice, choice.name
    built = _build(op.value, f.cls if f is not None else None, f"{where}: value")
    _check_kind(f, built, where)
    if index is not None:
        items = container.get(key)
        if not isinstance(items, list) or index >= len(items):
            raise _unprocessable(f"{where}: no value to replace at {op.path!r}")
        items[index] = built.data
        if built.companion is not None:
            _set_companion(container, key, index, built.companion)
        return
    if new_key != key:
        # another type for a choice element: the old value (and its extensions) goes
        container.pop(key, None)
        container.pop("_" + key, None)
    container[new_key] = built.data
    if built.companion is not None:
        container["_" + new_key] = built.companion
    elif not built.primitive:
        container.pop("_" + new_key, None)  # a complex value has no primitive companion
    # otherwise an existing "_key" companion (id / extensions of the primitive) is kept


_HANDLERS = {
    "add": _op_add,
    "insert": _op_insert,
    "delete": _op_delete,
    "replace": _op_replace,
    "move": _op_move,
}


def apply_fhirpath_patch(resource: dict, parameters: dict) -> dict:
    """Apply a FHIRPath Patch (a Parameters resource) to ``resource``; returns the patched copy."""
    if not isinstance(resource, dict):
        raise _malformed("the resource to patch must be a JSON object")
    operations = _parse_operations(parameters)
    work = copy.deepcopy(resource)
    for op in operations:
        try:
            _HANDLERS[op.type](work, op)
        except PatchError as exc:
            if not exc.message.startswith("operation #"):
                exc.message = f"operation #{op.number}: {exc.message}"
                exc.args = (exc.message,)
            raise
    return work
