"""data/r4_schema.json is derived, not hand-kept: the generator run on the R4 definitions it
depends on (tests/data/r4-definitions, no network) must give the committed file byte for byte,
and every R4B difference it records must still hold for the installed fhir.resources, so an
upgrade that changes R4B fails here with the element named. The types the copied definitions
do not cover are checked by `make schema` against the whole R4 package."""
from __future__ import annotations

import copy
import difflib
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from fhirserver.model import gen_schema
from fhirserver.model.schema import Schema

DEFINITIONS = Path(__file__).resolve().parent.parent / "data" / "r4-definitions" / "structuredefinitions.tar.xz"
REGENERATE = "regenerate with `make schema` and review the change"


@functools.cache
def _definitions() -> tuple[dict[str, Any], ...]:
    return tuple(gen_schema.read_definitions(DEFINITIONS))


def _committed() -> str:
    return gen_schema.DATA_FILE.read_text()


def test_generator_reproduces_the_committed_file() -> None:
    generated = gen_schema.render(gen_schema.generate(_definitions()))
    committed = _committed()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True),
                                        "committed r4_schema.json", "generated", n=1))
    if generated != committed:
        pytest.fail(f"r4_schema.json drifted from R4 and the R4B models ({REGENERATE}):\n{diff}")


def test_r4b_patches_still_match_the_installed_models() -> None:
    raw = Schema({"r4_only": {}, "r4b_patches": {}})  # the R4B models as they are
    problems = []
    for cls_name, (removed, added) in json.loads(_committed())["r4b_patches"].items():
        try:
            ti = raw.type_info(raw.model_class(cls_name))
        except (ValueError, AttributeError):
            problems.append(f"{cls_name}: no longer an R4B model")
            continue
        groups = {e.choice for e in ti.elements.values() if e.choice}
        for name in removed:
            el = ti.elements.get(name)
            if el is None or el.choice is None:
                problems.append(f"{cls_name}.{name}: R4B no longer has this choice type to remove")
        for name, code in added:
            if name in ti.elements:
                problems.append(f"{cls_name}.{name}: R4B has it now, nothing to add")
            if not any(name.startswith(g) and name[len(g):][:1].isupper() for g in groups):
                problems.append(f"{cls_name}.{name}: R4B has no choice element to add it to")
            if code[:1].isupper() and raw.named(code) is None:  # a datatype, not a primitive
                problems.append(f"{cls_name}.{name}: R4B has no type {code}")
    assert not problems, f"fhir.resources' R4B changed under r4b_patches ({REGENERATE}):\n" + "\n".join(problems)


def test_r4_only_types_still_missing_or_reshaped_in_r4b() -> None:
    raw = Schema({"r4_only": {}, "r4b_patches": {}})
    types = gen_schema.base_types(_definitions())
    problems = []
    for name in (k for k in json.loads(_committed())["r4_only"] if "." not in k):
        if raw.named(name) is None:
            continue
        if name not in types:
            problems.append(f"{name}: R4B has it and its R4 definition is not in {DEFINITIONS.name}")
            continue
        diffs = gen_schema.compare(types[name], raw)
        if not any(d.other for d in diffs.values()):
            problems.append(f"{name}: R4B's model now matches R4 (up to choice types)")
    assert not problems, f"fhir.resources' R4B changed under r4_only ({REGENERATE}):\n" + "\n".join(problems)


def _edited(type_name: str, path: str, edit: Any) -> list[dict[str, Any]]:
    definitions = [copy.deepcopy(sd) if sd["type"] == type_name else sd for sd in _definitions()]
    for sd in definitions:
        if sd["type"] == type_name:
            for el in sd["snapshot"]["element"]:
                if el["path"] == path:
                    edit(el)
    return definitions


def test_a_changed_definition_changes_the_result() -> None:
    """The comparison sees both kinds of difference: a choice type (a patch) and anything else
    (the whole resource goes into r4_only)."""
    no_meta = _edited("Extension", "Extension.value[x]",
                      lambda el: el.__setitem__("type", [t for t in el["type"] if t["code"] != "Meta"]))
    patch = gen_schema.generate(no_meta)["r4b_patches"]["Extension"]
    assert patch == [["valueCodeableReference", "valueRatioRange"], []]
    listed = _edited("ActivityDefinition", "ActivityDefinition.status", lambda el: el.__setitem__("max", "*"))
    data = gen_schema.generate(listed)
    assert "ActivityDefinition" not in data["r4b_patches"]
    assert "status:code*" in data["r4_only"]["ActivityDefinition"].split()
