"""The quick walk (model.prevalidate) against the R4B models it lets writes skip: over the HL7
examples, the Synthea resources and systematic mutations of both, whenever the walk vouches for
a body the models must accept it (a false "clean" would store what the server refuses today),
and it must vouch for nearly every valid body (else it saves nothing).

Mutations are applied in place and undone, and each body gets a seeded sample of them (all of
them with FHIRSERVER_FAST_VALIDATION_FULL=1, which takes many minutes)."""
from __future__ import annotations

import copy
import glob
import os
import random
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from fhirserver.model.jsonio import loads
from fhirserver.model.prevalidate import surely_valid
from fhirserver.model.schema import COMPLEX, PRIM, RESOURCE, schema
from fhirserver.model.types import R4_ONLY_SHAPES, R4_RESOURCE_TYPES
from fhirserver.model.validate import _codes_allowed, _model, _nulls_absent

DATA = Path(__file__).resolve().parents[1] / "data"
FULL = os.environ.get("FHIRSERVER_FAST_VALIDATION_FULL") == "1"
PER_BODY = 120  # mutations tried per body (a seeded sample)
BUNDLE_CAP = 3000  # mutations of a whole Bundle in the full run (its entries get all theirs)
SYNTHEA_PER_TYPE = 12  # Synthea resources of each type that get mutated (they are alike)
_DELETE = object()

# values each primitive type must refuse (the walk must not vouch for them)
_BAD: dict[str, list[Any]] = {
    "date": ["2020-13-01", "2020-02-30", "2021-02-29", "2020-1-01", "20200101", "2020-02-03T10:00:00Z",
             "0000", "2020-00", "2020-01-01 ", "2020-01-01\n"],
    "dateTime": ["2020-02-30", "2020-02-03T10:00", "2020-02-03T10:00:00", "2020-02-03T24:00:00Z",
                 "2020-02-03T10:00:60Z", "2021-02-29T10:00:00Z", "2020-04-31T10:00:00+01:00",
                 "2020-02-03T10:00:00+15:00", "2020-02-03T10:00:00.Z", "2020-02-03t10:00:00Z",
                 "2020-02-03T10:00:00Z\n", "2020-13"],
    "instant": ["2020-02-03", "2020-02-03T10:00:00", "2020", "2020-02-30T10:00:00Z",
                "2016-12-31T23:59:60Z", "2020-02-03T10:00:00Z\n"],
    "time": ["10:00", "24:00:00", "10:00:60", "10:00:00Z", "10:00:00\n", "1:00:00"],
    "id": ["a b", "a_b", "x" * 256, "é", "a\n", " a"],
    "code": ["a  b", " a", "a ", "a\n", "a\tb", "\u00a0"],
    "oid": ["urn:oid:1.2.", "1.2.3", "urn:oid:3.1", "urn:oid:1.02", "urn:oid:1.2\n"],
    "uuid": ["urn:uuid:zzz", "c757873d-ec9a-4326-a141-556f43239520"],
    "base64Binary": ["aGVsbG8", "a", "aGVsbG8=x", "====", "aGVsbG8=\n="],
    "decimal": [Decimal("NaN"), Decimal("Infinity"), "1.5", True, Decimal("1E+5000000")],
    "integer": [2 ** 31, -2 ** 31 - 1, Decimal("1.5"), Decimal("1.0"), True, "1"],
    "positiveInt": [0, -1, 2 ** 31, True],
    "unsignedInt": [-1, 2 ** 31, False],
    "boolean": ["true", 1, 0, None],
    "string": ["\u00a0", "\u3000\u2028", 1, True],
}
# values at the edges of what each type allows: the walk may vouch for them, the models must agree
_EDGE: dict[str, list[Any]] = {
    "date": ["0001-01-01", "0001", "9999-12-31", "2020-02-29", "2020-02", "1900-02-28"],
    "dateTime": ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2020-02-29T10:00:00.123456789012Z",
                 "2020-02-03T23:59:59-13:59", "2020-02-03T10:00:00-00:00", "2020-02-03", "2020", "2020-12"],
    "instant": ["0001-01-01T00:00:00Z", "2020-02-29T10:00:00.1234567890Z", "2020-02-03T00:00:00+14:00"],
    "time": ["00:00:00", "23:59:59.999999999", "12:00:00.5"],
    "id": ["x" * 64, "A-b.9", "-", "."],
    "code": ["a b", "é", "a-b_c/d"],
    "base64Binary": ["aGVsbG8=", "aGVs\nbG8=", "aGVsbG8h", "aA==", "+/+/"],
    "decimal": [0, -0, Decimal("-0.0"), Decimal("1E+3"), Decimal("1.5e-7"), 2 ** 40, 1.5],
    "integer": [0, -2 ** 31, 2 ** 31 - 1],
    "positiveInt": [1, 2 ** 31 - 1],
    "unsignedInt": [0, 2 ** 31 - 1],
    "oid": ["urn:oid:1.2.840.10008", "urn:oid:2.0"],
    "string": ["\u00a0x", " x ", "\n", "x\u3000"],
    "uri": ["x y", " ", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"],
    "url": ["not a url", "/relative"],
    "markdown": ["\n\n", "*x*"],
}
# odd values tried on every primitive: right for some types, wrong for others
_ANY = ["a  b", " x", "x\n", "\u00a0x", "", 1, True, Decimal("1.5"), [], {}, ["x"], {"value": "x"}]
_COMPANIONS = [{}, {"id": "x"}, {"extension": []}, {"extension": [{"url": "http://e.org", "valueString": "v"}]},
               {"extension": [{"valueString": "v"}]}, {"extension": [{"url": "http://e.org", "valueString": ""}]},
               {"foo": 1}, {"id": 1}, {"id": ""}, {"fhir_comments": "c"}, "x", [], None,
               {"extension": {"url": "http://e.org", "valueString": "v"}},
               {"id": "x", "extension": [{"url": "http://e.org", "valueBoolean": "yes"}]}]


def _examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(glob.glob(str(DATA / "fhir-r4-examples" / "*.json"))):
        body = loads(Path(path).read_bytes())
        if isinstance(body, dict) and body.get("resourceType") in R4_RESOURCE_TYPES:
            out.append((Path(path).name, body))
    return out


def _synthea() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(glob.glob(str(DATA / "synthea" / "*.json"))):
        bundle = loads(Path(path).read_bytes())
        for i, entry in enumerate(bundle.get("entry", [])):
            out.append((f"{Path(path).name}#{i}", entry["resource"]))
    return out


def _models_accept(body: dict[str, Any]) -> bool:
    try:
        _model(body["resourceType"]).model_validate(body)
    except Exception:  # noqa: BLE001 - any refusal counts
        return False
    return True


def _vouched(body: Any) -> bool:
    rt = body.get("resourceType") if isinstance(body, dict) else None
    return isinstance(rt, str) and rt in R4_RESOURCE_TYPES and surely_valid(body, rt)


def _others_agree(body: dict[str, Any]) -> bool:
    """What a vouched-for body must also pass: the null and required-binding checks it lets
    validate_resource skip."""
    return _nulls_absent(body) and _codes_allowed(body, schema().resource(body["resourceType"]))


# -- mutations: (dict, key, new value or _DELETE), applied in place and undone ---------------------
def _mutations(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, Any]]:
    table = schema()
    yield from _node_mutations(body, table.resource(body["resourceType"]), table, top=True)


def _node_mutations(node: dict[str, Any], ti: Any, table: Any, top: bool = False) -> Iterator[tuple]:
    elements = ti.elements if ti is not None else {}
    yield node, "bogusElement", "x"
    yield node, "_bogus", {"id": "x"}
    yield node, "fhir_comments", "x"
    if "resourceType" in node:
        for rt in ("Patient", "Observation", "Bogus", 1):
            if rt != node["resourceType"]:
                yield node, "resourceType", rt
    elif not top:
        yield node, "resourceType", "Patient"
    for key, value in list(node.items()):
        yield node, key, _DELETE
        el = elements.get(key)
        if isinstance(value, list):
            yield node, key, value[0] if value else "x"
            yield node, key, []
            yield node, key, value + [None]
            yield node, key, [None] + value
            yield node, key, value + [{}]
            yield node, key, value + ["x"]
        else:
            yield node, key, [value]
        if isinstance(value, dict):
            yield node, key, {}
            yield node, key, "x"
        if el is not None and el.kind == PRIM:
            yield from _primitive_mutations(node, key, value, el)
        elif el is not None and el.kind in (COMPLEX, RESOURCE):
            yield node, "_" + key, {"id": "x"}
        if el is not None and el.choice:
            for other in (n for n, e in elements.items() if e.choice == el.choice and n != key):
                sibling = elements[other]
                yield node, other, "x" if sibling.kind == PRIM else {"id": "x"}
                break
        if key.startswith("_") and key[1:] in elements:
            yield from ((node, key, c) for c in _COMPANIONS)
        # into the children
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            if el is not None and (el.kind == RESOURCE or "resourceType" in item):
                rt = item.get("resourceType")
                child = table.resource(rt) if rt not in R4_ONLY_SHAPES else None
            elif el is not None:
                child = table.child(el)
            else:
                child = None
            yield from _node_mutations(item, child, table)


def _primitive_mutations(node: dict[str, Any], key: str, value: Any, el: Any) -> Iterator[tuple]:
    values = _BAD.get(el.prim or "", []) + _EDGE.get(el.prim or "", []) + _ANY
    if isinstance(value, str):
        values = values + [" " + value, value + "\n", value + " ", value.replace(" ", "  ")]
    if el.codes is not None:
        values = values + ["not-a-code", sorted(el.codes)[0].upper()]
    for bad in values:
        yield node, key, [bad] if el.is_list else bad
    if el.is_list and isinstance(value, list):
        yield node, key, value + [value[0]] if value else ["x"]
        yield node, key, [None, *value]
        n = len(value)
        yield node, "_" + key, [None] * n
        yield node, "_" + key, [None] * n + [{"id": "x"}]
        yield node, "_" + key, [{"id": "x"}] * max(n - 1, 1)
        yield node, "_" + key, [{}] * n
        yield node, "_" + key, {"id": "x"}
        yield node, "_" + key, [{"extension": [{"valueString": "v"}]}] * n
    else:
        yield from ((node, "_" + key, c) for c in _COMPANIONS)
        yield node, "_" + key, [{"id": "x"}]


def _apply(node: dict[str, Any], key: str, new: Any) -> Any:
    old = node.get(key, _DELETE)
    if new is _DELETE:
        node.pop(key, None)
    else:
        node[key] = new
    return old


def _exploded(bodies: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The bodies and, for the full run, each Bundle entry's resource on its own (a mutation
    inside a large Bundle costs a walk and a model run of the whole Bundle)."""
    out = list(bodies)
    for name, body in bodies:
        if body.get("resourceType") == "Bundle":
            for i, entry in enumerate(body.get("entry") or []):
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and res.get("resourceType") in R4_RESOURCE_TYPES:
                    out.append((f"{name}#entry{i}", res))
    return out


def _differential(bodies: list[tuple[str, dict[str, Any]]], per_body: int | None) -> tuple[int, int, list[str]]:
    """Mutate each body (a seeded sample of `per_body`, Bundles at most BUNDLE_CAP);
    (mutations tried, mutations vouched for, false cleans)."""
    tried = vouched = 0
    false_clean: list[str] = []
    for name, body in bodies:
        muts = list(_mutations(body))
        cap = per_body
        if body["resourceType"] == "Bundle":
            cap = min(cap or BUNDLE_CAP, BUNDLE_CAP)
        if cap is not None and len(muts) > cap:
            muts = random.Random(name).sample(muts, cap)
        for node, key, new in muts:
            old = _apply(node, key, new)
            try:
                tried += 1
                if _vouched(body):
                    vouched += 1
                    if not _others_agree(body) or not _models_accept(body):
                        false_clean.append(f"{name}: {key} = {new!r:.80}")
            finally:
                _apply(node, key, old)
    return tried, vouched, false_clean


# -- the tests -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def examples() -> list[tuple[str, dict[str, Any]]]:
    return _examples()


@pytest.fixture(scope="module")
def synthea() -> list[tuple[str, dict[str, Any]]]:
    return _synthea()


@pytest.mark.parametrize("corpus", ["examples", "synthea"])
def test_vouches_only_for_accepted_bodies_and_for_nearly_all_of_them(corpus: str, request: Any) -> None:
    bodies = request.getfixturevalue(corpus)
    accepted = vouched = 0
    false_clean, missed = [], []
    for name, body in bodies:
        before = copy.deepcopy(body) if not FULL else None
        fast = _vouched(body)
        if before is not None:
            assert body == before, f"{name}: the walk changed the body"
        ok = _models_accept(body) if body["resourceType"] not in R4_ONLY_SHAPES else False
        accepted += ok
        vouched += fast
        if fast and not (ok and _others_agree(body)):
            false_clean.append(name)
        elif ok and not fast:
            missed.append(name)
    print(f"\n{corpus}: {len(bodies)} bodies, models accept {accepted}, walk vouches for {vouched}"
          f" ({vouched / max(accepted, 1):.1%} of the accepted); not vouched: {missed[:10]}")
    assert not false_clean, false_clean
    assert vouched >= 0.97 * accepted


def test_mutated_examples(examples: list[tuple[str, dict[str, Any]]]) -> None:
    tried, vouched, false_clean = _differential(_exploded(examples) if FULL else examples,
                                                None if FULL else PER_BODY)
    print(f"\nexamples: {tried} mutations, the walk vouched for {vouched}")
    assert not false_clean, false_clean[:20]
    assert tried > 50_000 or FULL


def test_mutated_synthea(synthea: list[tuple[str, dict[str, Any]]]) -> None:
    picked: dict[str, int] = {}
    sample = []
    for name, body in synthea:
        n = picked.get(body["resourceType"], 0)
        if FULL or n < SYNTHEA_PER_TYPE:
            picked[body["resourceType"]] = n + 1
            sample.append((name, body))
    tried, vouched, false_clean = _differential(sample, None if FULL else PER_BODY * 2)
    print(f"\nsynthea: {len(sample)} resources, {tried} mutations, the walk vouched for {vouched}")
    assert not false_clean, false_clean[:20]


def test_contained_resources_resolve_as_the_models_do() -> None:
    """The walk finds a contained resource's model by name; the models by their type map."""
    from fhir.resources.R4B.fhirtypes import ResourceType
    from fhir_core.constraints import FHIR_TYPES_MAPS
    from pydantic._internal._validators import import_string

    prefix = ResourceType._prefix
    for rt in sorted(R4_RESOURCE_TYPES - R4_ONLY_SHAPES):
        assert import_string(FHIR_TYPES_MAPS[f"{prefix}{rt}Type"]) is schema().model_class(rt), rt


def test_targeted_shapes() -> None:
    """The shapes the brief names, each on a small valid body: refused or accepted by both."""
    base = {"resourceType": "Patient", "id": "p1", "active": True,
            "name": [{"family": "Doe", "given": ["Jo", "Ann"]}], "birthDate": "1970-01-01",
            "extension": [{"url": "http://e.org/x", "valueString": "v"}]}
    assert _vouched(base) and _models_accept(base)
    cases = [
        {"name": [{"given": "Jo"}]}, {"active": "true"}, {"active": 1}, {"birthDate": "1970-02-30"},
        {"id": "a b"}, {"extension": [{"valueString": "v"}]},
        {"extension": [{"url": "http://e.org/x", "valueString": "v", "valueBoolean": True}]},
        {"deceasedBoolean": True, "deceasedDateTime": "2020"}, {"name": [{}]}, {"name": []},
        {"name": [None]}, {"name": [{"given": ["Jo", None]}]}, {"name": [{"_given": [None, {"id": "x"}]}]},
        {"name": [{"given": ["Jo"], "_given": [{"id": "x"}, {"id": "y"}]}]}, {"_active": {}},
        {"_active": {"extension": [{"url": "u", "valueCode": "a  b"}]}}, {"multipleBirthInteger": True},
        {"contained": [{"resourceType": "Patient", "id": "c", "gender": "female"}]},
        {"contained": [{"id": "c"}]}, {"contained": [{"resourceType": "Observation", "status": "final"}]},
        {"contained": [{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}]},
        {"photo": [{"size": -1}]}, {"photo": [{"size": 0}]}, {"photo": [{"data": "aGVsbG8"}]},
        {"communication": [{"language": {"text": "en"}, "preferred": True}]}, {"communication": [{}]},
        {"gender": "robot"}, {"gender": "female"}, {"contact": [{"gender": "Male"}]},
    ]
    for change in cases:
        body = {**copy.deepcopy(base), **change}
        if _vouched(body):
            assert _models_accept(body) and _others_agree(body), change
