"""Tests for fhirserver.model.patch (JSON Patch and FHIRPath Patch).

Several FHIRPath Patch cases are the published HL7 test cases (fhir-test-cases r4/patch/
fhir-patch-tests.xml) written out as JSON.
"""
from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from fhirserver.model.patch import (
    PatchError,
    apply_fhirpath_patch,
    apply_json_patch,
    is_fhirpath_patch,
)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def operation(op_type: str, path: str | None = None, **parts) -> dict:
    """One ``operation`` parameter.  Keyword values:

    * name / index / source / destination: plain str / int
    * value: a dict that is merged into the value part, e.g. {"valueDate": "1930-01-01"}
      or {"part": [...]}
    """
    out = [{"name": "type", "valueCode": op_type}]
    if path is not None:
        out.append({"name": "path", "valueString": path})
    for key, val in parts.items():
        if key == "value":
            out.append({"name": "value", **val})
        elif isinstance(val, int):
            out.append({"name": key, "valueInteger": val})
        else:
            out.append({"name": key, "valueString": val})
    return {"name": "operation", "part": out}


def params(*ops: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(ops)}


def fp_patch(resource: dict, *ops: dict) -> dict:
    """Apply and check that neither input was mutated."""
    before_res = copy.deepcopy(resource)
    body = params(*ops)
    before_body = copy.deepcopy(body)
    out = apply_fhirpath_patch(resource, body)
    assert resource == before_res, "input resource was mutated"
    assert body == before_body, "patch document was mutated"
    assert out is not resource
    return out


def fp_error(resource: dict, *ops: dict) -> PatchError:
    before = copy.deepcopy(resource)
    with pytest.raises(PatchError) as info:
        apply_fhirpath_patch(resource, params(*ops))
    assert resource == before
    return info.value


def ident(n: int) -> dict:
    return {"system": "http://example.org", "value": f"value {n}"}


def with_ids(*ns: int) -> dict:
    return {"resourceType": "Patient", "identifier": [ident(n) for n in ns]}


@pytest.fixture
def patient() -> dict:
    return {
        "resourceType": "Patient",
        "id": "pat1",
        "meta": {"versionId": "1"},
        "identifier": [
            {"system": "http://example.org/mrn", "value": "12345"},
            {"system": "http://example.org/ssn", "value": "999-99-9999"},
        ],
        "active": True,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
        ],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1974-12-25T14:35:45-05:00",
                }
            ]
        },
        "deceasedBoolean": False,
    }


# ------------------------------------------------------------------------------------------
# is_fhirpath_patch
# ------------------------------------------------------------------------------------------


def test_is_fhirpath_patch():
    assert is_fhirpath_patch({"resourceType": "Parameters"})
    assert not is_fhirpath_patch({"resourceType": "Patient"})
    assert not is_fhirpath_patch([{"op": "add", "path": "/a", "value": 1}])
    assert not is_fhirpath_patch(None)


# ------------------------------------------------------------------------------------------
# JSON Patch
# ------------------------------------------------------------------------------------------


def test_json_patch_add_replace_remove(patient):
    before = copy.deepcopy(patient)
    doc = [
        {"op": "add", "path": "/telecom", "value": [{"system": "phone", "value": "555"}]},
        {"op": "add", "path": "/name/-", "value": {"family": "Added"}},
        {"op": "replace", "path": "/birthDate", "value": "1980-01-01"},
        {"op": "remove", "path": "/identifier/1"},
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "copy", "from": "/gender", "path": "/language"},
        {"op": "move", "from": "/language", "path": "/implicitRules"},
    ]
    doc_before = copy.deepcopy(doc)
    out = apply_json_patch(patient, doc)
    assert patient == before and doc == doc_before
    assert out["telecom"] == [{"system": "phone", "value": "555"}]
    assert out["name"][-1] == {"family": "Added"}
    assert out["birthDate"] == "1980-01-01"
    assert out["identifier"] == [before["identifier"][0]]
    assert out["implicitRules"] == "male" and "language" not in out
    # the result does not share structure with the patch document
    out["telecom"][0]["value"] = "changed"
    assert doc[0]["value"][0]["value"] == "555"


def test_json_patch_keeps_decimal():
    res = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("1.0")}}
    out = apply_json_patch(res, [{"op": "replace", "path": "/valueQuantity/value", "value": Decimal("2.50")}])
    assert out["valueQuantity"]["value"] == Decimal("2.50")
    assert isinstance(out["valueQuantity"]["value"], Decimal)


def test_json_patch_test_failure_is_422(patient):
    with pytest.raises(PatchError) as info:
        apply_json_patch(patient, [{"op": "test", "path": "/gender", "value": "female"}])
    assert info.value.status == 422


@pytest.mark.parametrize(
    "doc",
    [
        [{"op": "remove", "path": "/multipleBirthBoolean"}],
        [{"op": "replace", "path": "/maritalStatus", "value": {"text": "x"}}],
        [{"op": "add", "path": "/contact/0/name", "value": {"text": "x"}}],
        [{"op": "add", "path": "/name/7", "value": {"text": "x"}}],
        [{"op": "move", "from": "/nothing", "path": "/x"}],
        [{"op": "replace", "path": "", "value": ["not", "an", "object"]}],
    ],
)
def test_json_patch_unappliable_is_422(patient, doc):
    with pytest.raises(PatchError) as info:
        apply_json_patch(patient, doc)
    assert info.value.status == 422


@pytest.mark.parametrize(
    "doc",
    [
        {"op": "add", "path": "/a", "value": 1},  # not an array
        ["add"],
        [{"path": "/a", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": "/a"}],  # no value
        [{"op": "add", "value": 1}],  # no path
        [{"op": "move", "path": "/a"}],  # no from
        [{"op": "add", "path": "birthDate", "value": "x"}],  # pointer must start with /
        [{"op": "add", "path": "/a~2", "value": "x"}],  # bad escape
        [{"op": "add", "path": 5, "value": "x"}],
    ],
)
def test_json_patch_malformed_is_400(patient, doc):
    with pytest.raises(PatchError) as info:
        apply_json_patch(patient, doc)
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------------------------------
# FHIRPath Patch: the operation types on a Patient
# ------------------------------------------------------------------------------------------


def test_replace_birthdate_keeps_extension(patient):
    out = fp_patch(patient, operation("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}))
    assert out["birthDate"] == "1930-01-01"
    assert out["_birthDate"] == patient["_birthDate"]
    assert {k: v for k, v in out.items() if k != "birthDate"} == {
        k: v for k, v in patient.items() if k != "birthDate"
    }


def test_add_telecom_from_parts(patient):
    value = {
        "part": [
            {"name": "system", "valueCode": "phone"},
            {"name": "value", "valueString": "+1 555 0100"},
            {"name": "use", "valueCode": "home"},
            {"name": "period", "valuePeriod": {"start": "2020-01-01"}},
        ]
    }
    out = fp_patch(patient, operation("add", "Patient", name="telecom", value=value))
    assert out["telecom"] == [
        {"system": "phone", "value": "+1 555 0100", "use": "home", "period": {"start": "2020-01-01"}}
    ]
    # a second add appends
    out2 = fp_patch(out, operation("add", "Patient", name="telecom", value={"valueContactPoint": {"system": "email", "value": "a@b.c"}}))
    assert [t["system"] for t in out2["telecom"]] == ["phone", "email"]


def test_add_nested_parts_use_cardinality_from_the_model(patient):
    value = {
        "part": [
            {"name": "name", "part": [{"name": "family", "valueString": "Doe"}, {"name": "given", "valueString": "Jane"}]},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
            {"name": "gender", "valueCode": "female"},
        ]
    }
    out = fp_patch(patient, operation("add", "Patient", name="contact", value=value))
    # HumanName.given and PatientContact.telecom repeat, PatientContact.name does not
    assert out["contact"] == [
        {"name": {"family": "Doe", "given": ["Jane"]}, "telecom": [{"system": "phone", "value": "1"}], "gender": "female"}
    ]


def test_insert_given_name_at_index_0(patient):
    out = fp_patch(patient, operation("insert", "Patient.name[0].given", index=0, value={"valueString": "Pete"}))
    assert out["name"][0]["given"] == ["Pete", "Peter", "James"]
    assert out["name"][1] == patient["name"][1]


def test_insert_into_missing_list_creates_it(patient):
    out = fp_patch(patient, operation("insert", "Patient.telecom", index=0, value={"valueContactPoint": {"system": "phone", "value": "1"}}))
    assert out["telecom"] == [{"system": "phone", "value": "1"}]
    err = fp_error(patient, operation("insert", "Patient.telecom", index=1, value={"valueContactPoint": {"value": "1"}}))
    assert err.status == 422


def test_insert_index_beyond_end_is_422(patient):
    err = fp_error(patient, operation("insert", "Patient.identifier", index=3, value={"valueIdentifier": {"value": "x"}}))
    assert err.status == 422


def test_insert_at_end(patient):
    out = fp_patch(patient, operation("insert", "Patient.identifier", index=2, value={"valueIdentifier": {"value": "x"}}))
    assert out["identifier"][2] == {"value": "x"}


def test_delete_identifier_selected_with_where(patient):
    out = fp_patch(patient, operation("delete", "Patient.identifier.where(system='http://example.org/ssn')"))
    assert out["identifier"] == [patient["identifier"][0]]


def test_delete_last_item_removes_the_list(patient):
    out = fp_patch(
        patient,
        operation("delete", "Patient.identifier.where(system='http://example.org/ssn')"),
        operation("delete", "Patient.identifier[0]"),
    )
    assert "identifier" not in out


def test_delete_nothing_is_a_noop(patient):
    out = fp_patch(patient, operation("delete", "Patient.identifier.where(system='nope')"))
    assert out == patient
    out = fp_patch(patient, operation("delete", "Patient.maritalStatus"))
    assert out == patient


def test_delete_primitive_removes_its_extensions(patient):
    out = fp_patch(patient, operation("delete", "Patient.birthDate"))
    assert "birthDate" not in out and "_birthDate" not in out


def test_delete_extension_of_primitive(patient):
    out = fp_patch(patient, operation("delete", "Patient.birthDate.extension"))
    assert out["birthDate"] == "1974-12-25"
    assert "_birthDate" not in out


def test_delete_two_matches_is_422(patient):
    err = fp_error(patient, operation("delete", "Patient.identifier"))
    assert err.status == 422


def test_move(patient):
    out = fp_patch(patient, operation("move", "Patient.name", source=1, destination=0))
    assert out["name"] == [patient["name"][1], patient["name"][0]]
    err = fp_error(patient, operation("move", "Patient.name", source=2, destination=0))
    assert err.status == 422
    err = fp_error(patient, operation("move", "Patient.telecom", source=0, destination=0))
    assert err.status == 422


def test_replace_complex_in_list(patient):
    out = fp_patch(
        patient,
        operation("replace", "Patient.name.where(use='usual')", value={"valueHumanName": {"use": "nickname", "given": ["Jimmy"]}}),
    )
    assert out["name"][1] == {"use": "nickname", "given": ["Jimmy"]}
    assert out["name"][0] == patient["name"][0]


def test_replace_list_item_by_index_and_function(patient):
    out = fp_patch(patient, operation("replace", "Patient.name.first().given.last()", value={"valueString": "J."}))
    assert out["name"][0]["given"] == ["Peter", "J."]


def test_replace_choice_type_changes_the_key(patient):
    out = fp_patch(patient, operation("replace", "Patient.deceased", value={"valueDateTime": "2020-02-02"}))
    assert out["deceasedDateTime"] == "2020-02-02" and "deceasedBoolean" not in out
    err = fp_error(patient, operation("replace", "Patient.deceased", value={"valueString": "yes"}))
    assert err.status == 422


def test_add_choice_element(patient):
    out = fp_patch(patient, operation("add", "Patient", name="multipleBirth", value={"valueInteger": 2}))
    assert out["multipleBirthInteger"] == 2
    err = fp_error(patient, operation("add", "Patient", name="deceased", value={"valueDateTime": "2020"}))
    assert err.status == 422  # deceased[x] already has a value


def test_add_existing_single_element_is_422(patient):
    err = fp_error(patient, operation("add", "Patient", name="gender", value={"valueCode": "female"}))
    assert err.status == 422


def test_add_extension_to_resource_and_to_primitive(patient):
    ext_parts = {
        "part": [
            {"name": "url", "valueUri": "http://example.org/ext"},
            {"name": "value", "valueDecimal": Decimal("1.50")},
        ]
    }
    out = fp_patch(
        patient,
        operation("add", "Patient", name="extension", value=ext_parts),
        operation("add", "Patient.name[0].family", name="extension", value=ext_parts),
        operation("add", "Patient.birthDate", name="extension", value={"part": [{"name": "url", "valueUri": "u2"}, {"name": "value", "valueCode": "c"}]}),
    )
    expected_ext = {"url": "http://example.org/ext", "valueDecimal": Decimal("1.50")}
    assert out["extension"] == [expected_ext]
    assert isinstance(out["extension"][0]["valueDecimal"], Decimal)
    assert out["name"][0]["_family"] == {"extension": [expected_ext]}
    assert out["_birthDate"]["extension"][-1] == {"url": "u2", "valueCode": "c"}
    assert len(out["_birthDate"]["extension"]) == 2


def test_primitive_list_with_extensions_stays_aligned():
    res = {
        "resourceType": "Patient",
        "name": [{"given": ["A", "B", "C"], "_given": [None, {"id": "b"}, None]}],
    }
    out = fp_patch(res, operation("insert", "Patient.name.given", index=0, value={"valueString": "Z"}))
    assert out["name"][0]["given"] == ["Z", "A", "B", "C"]
    assert out["name"][0]["_given"] == [None, None, {"id": "b"}, None]
    out = fp_patch(res, operation("move", "Patient.name.given", source=1, destination=0))
    assert out["name"][0]["given"] == ["B", "A", "C"]
    assert out["name"][0]["_given"] == [{"id": "b"}, None, None]
    out = fp_patch(res, operation("delete", "Patient.name.given[1]"))
    assert out["name"][0] == {"given": ["A", "C"]}
    # indexes count values, not the "_given" holders
    out = fp_patch(res, operation("replace", "Patient.name.given[2]", value={"valueString": "CC"}))
    assert out["name"][0]["given"] == ["A", "B", "CC"]
    assert out["name"][0]["_given"] == res["name"][0]["_given"]
    out = fp_patch(res, operation("delete", "Patient.name.given.id"))
    assert out["name"][0] == {"given": ["A", "B", "C"]}


def test_contained_and_choice_navigation():
    res = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "p1", "gender": "male"}],
        "valueQuantity": {"value": Decimal("1.5"), "unit": "mg"},
        "component": [
            {"code": {"text": "a"}, "valueString": "s"},
            {"code": {"text": "b"}, "valueQuantity": {"value": 2}},
        ],
    }
    out = fp_patch(
        res,
        operation("replace", "Observation.value.value", value={"valueDecimal": Decimal("2.25")}),
        operation("replace", "Observation.contained.where(id='p1').gender", value={"valueCode": "female"}),
        operation("delete", "Observation.component.where(code.text='a')"),
        operation(
            "add",
            "Observation",
            name="component",
            value={"part": [{"name": "code", "valueCodeableConcept": {"text": "c"}}, {"name": "value", "valueBoolean": True}]},
        ),
    )
    assert out["valueQuantity"] == {"value": Decimal("2.25"), "unit": "mg"}
    assert out["contained"][0]["gender"] == "female"
    assert [c["code"]["text"] for c in out["component"]] == ["b", "c"]
    assert out["component"][1]["valueBoolean"] is True


def test_operations_apply_in_order(patient):
    out = fp_patch(
        patient,
        operation("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}}),
        operation("replace", "Patient.maritalStatus.text", value={"valueString": "single"}),
        operation("delete", "Patient.active"),
    )
    assert out["maritalStatus"] == {"text": "single"}
    assert "active" not in out


def test_empty_parameters_is_a_noop(patient):
    assert fp_patch(patient) == patient
    assert apply_fhirpath_patch(patient, {"resourceType": "Parameters"}) == patient


# ------------------------------------------------------------------------------------------
# FHIRPath Patch: errors
# ------------------------------------------------------------------------------------------


def test_replace_path_matching_two_elements_is_422(patient):
    err = fp_error(patient, operation("replace", "Patient.name.given", value={"valueString": "x"}))
    assert err.status == 422
    err = fp_error(patient, operation("replace", "Patient.identifier", value={"valueIdentifier": {"value": "x"}}))
    assert err.status == 422


def test_replace_or_add_at_missing_path_is_422(patient):
    assert fp_error(patient, operation("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"text": "x"}})).status == 422
    # HL7 test case "Operation on missing element"
    res = {"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}
    err = fp_error(res, operation("add", "Patient.identifier.where(use = 'official').period", name="end", value={"valueDate": "2021-12-01"}))
    assert err.status == 422


@pytest.mark.parametrize(
    "expression",
    ["Patient.name.where(", "Patient.name.(", "!!", "Patient.name.noSuchFunction()", "'just a string'", "1 + 1"],
)
def test_bad_expression_is_400(patient, expression):
    err = fp_error(patient, operation("replace", expression, value={"valueString": "x"}))
    assert err.status == 400


def test_unknown_operation_type_is_400(patient):
    err = fp_error(patient, operation("upsert", "Patient.birthDate", value={"valueDate": "2000-01-01"}))
    assert err.status == 400


@pytest.mark.parametrize(
    "op",
    [
        operation("replace", "Patient.birthDate"),  # missing value
        operation("add", "Patient", value={"valueCode": "male"}),  # missing name
        operation("add", "Patient", name="gender"),  # missing value
        operation("insert", "Patient.identifier", value={"valueIdentifier": {"value": "x"}}),  # missing index
        operation("move", "Patient.identifier", source=0),  # missing destination
        operation("delete"),  # missing path
        {"name": "operation", "part": [{"name": "path", "valueString": "Patient"}]},  # missing type
        {"name": "operation"},  # no parts
        {"name": "notAnOperation", "part": [{"name": "type", "valueCode": "delete"}]},
        operation("replace", "Patient.birthDate", value={}),  # value part without a value
        operation("replace", "Patient.birthDate", value={"valueDate": "2000", "part": [{"name": "x", "valueString": "y"}]}),
        operation("replace", "Patient.birthDate", value={"valueDate": {"not": "primitive"}}),
        operation("replace", "Patient.name[0]", value={"valueHumanName": "not an object"}),
        operation("insert", "Patient.identifier", index=-1, value={"valueIdentifier": {"value": "x"}}),
        operation("delete", "Patient.birthDate", bogus="x"),  # unknown part
        operation("add", "Patient", name="not a name", value={"valueString": "x"}),
        operation("add", "Patient", name="contact", value={"part": [{"valueString": "no name"}]}),
    ],
)
def test_malformed_operations_are_400(patient, op):
    err = fp_error(patient, op)
    assert err.status == 400


@pytest.mark.parametrize("body", [{"resourceType": "Patient"}, [], {"resourceType": "Parameters", "parameter": {}}])
def test_not_a_parameters_resource_is_400(patient, body):
    with pytest.raises(PatchError) as info:
        apply_fhirpath_patch(patient, body)
    assert info.value.status == 400


def test_type_mismatch_is_422(patient):
    # gender is a primitive; a complex value cannot go there
    err = fp_error(patient, operation("replace", "Patient.gender", value={"valueCoding": {"code": "male"}}))
    assert err.status == 422


def test_cannot_replace_or_delete_the_resource(patient):
    assert fp_error(patient, operation("replace", "Patient", value={"valueString": "x"})).status == 422
    assert fp_error(patient, operation("delete", "Patient")).status == 422


def test_error_leaves_input_untouched_even_after_earlier_operations(patient):
    err = fp_error(
        patient,
        operation("delete", "Patient.active"),
        operation("replace", "Patient.nothingHere", value={"valueString": "x"}),
    )
    assert err.status == 422
    assert "operation #2" in str(err)


# ------------------------------------------------------------------------------------------
# HL7 published test cases (fhir-test-cases r4/patch/fhir-patch-tests.xml), as JSON
# ------------------------------------------------------------------------------------------

_CONTACT = {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}, "gender": "male"}]}

SPEC_CASES = [
    (
        "Replace Primitive",
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
        [operation("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"})],
        {"resourceType": "Patient", "birthDate": "1930-01-01"},
    ),
    (
        "Delete Primitive",
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
        [operation("delete", "Patient.birthDate")],
        {"resourceType": "Patient"},
    ),
    (
        "Add Primitive",
        {"resourceType": "Patient"},
        [operation("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"})],
        {"resourceType": "Patient", "birthDate": "1930-01-01"},
    ),
    (
        "Replace Nested Primitive #1",
        _CONTACT,
        [operation("replace", "Patient.contact[0].gender", value={"valueCode": "female"})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}, "gender": "female"}]},
    ),
    (
        "Replace Nested Primitive #2",
        _CONTACT,
        [operation("replace", "Patient.contact[0].name.text", value={"valueString": "the name"})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "the name"}, "gender": "male"}]},
    ),
    (
        "Delete Nested Primitive #1",
        _CONTACT,
        [operation("delete", "Patient.contact[0].gender")],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
    ),
    (
        "Delete Nested Primitive #2",  # the emptied name goes too
        _CONTACT,
        [operation("delete", "Patient.contact[0].name.text")],
        {"resourceType": "Patient", "contact": [{"gender": "male"}]},
    ),
    (
        "Add Nested Primitive",
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
        [operation("add", "Patient.contact[0]", name="gender", value={"valueCode": "male"})],
        _CONTACT,
    ),
    (
        "Add Complex",
        {"resourceType": "Patient"},
        [operation("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}})],
        {"resourceType": "Patient", "maritalStatus": {"text": "married"}},
    ),
    (
        "Replace Complex",
        {"resourceType": "Patient", "maritalStatus": {"id": "1", "text": "married"}},
        [operation("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"id": "2", "text": "not married"}})],
        {"resourceType": "Patient", "maritalStatus": {"id": "2", "text": "not married"}},
    ),
    (
        "Delete Complex",
        {"resourceType": "Patient", "maritalStatus": {"text": "married"}},
        [operation("delete", "Patient.maritalStatus")],
        {"resourceType": "Patient"},
    ),
    (
        "Add Anonymous Type",
        {"resourceType": "Patient"},
        [operation("add", "Patient", name="contact", value={"part": [{"name": "name", "valueHumanName": {"text": "a name"}}]})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
    ),
    (
        "Delete Anonymous Type",
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
        [operation("delete", "Patient.contact[0]")],
        {"resourceType": "Patient"},
    ),
    (
        "List unchanged, contents changed",
        {"resourceType": "Patient", "identifier": [{"id": "a", **ident(1)}, {"id": "b", **ident(2)}]},
        [
            operation("replace", "Patient.identifier[0].value", value={"valueString": "value 2"}),
            operation("replace", "Patient.identifier[1].value", value={"valueString": "value 1"}),
        ],
        {"resourceType": "Patient", "identifier": [{"id": "a", **ident(2)}, {"id": "b", **ident(1)}]},
    ),
    (
        "Add to list",
        with_ids(1, 2),
        [operation("add", "Patient", name="identifier", value={"valueIdentifier": ident(3)})],
        with_ids(1, 2, 3),
    ),
    (
        "Insert in list #1",
        with_ids(1, 2),
        [operation("insert", "Patient.identifier", index=1, value={"valueIdentifier": ident(3)})],
        with_ids(1, 3, 2),
    ),
    (
        "Insert in list #2",
        with_ids(1, 2),
        [operation("insert", "Patient.identifier", index=0, value={"valueIdentifier": ident(3)})],
        with_ids(3, 1, 2),
    ),
    ("Delete from List #1", with_ids(1, 2, 3), [operation("delete", "Patient.identifier[0]")], with_ids(2, 3)),
    ("Delete from List #2", with_ids(1, 2, 3), [operation("delete", "Patient.identifier[1]")], with_ids(1, 3)),
    ("Delete from List #3", with_ids(1, 2, 3), [operation("delete", "Patient.identifier[2]")], with_ids(1, 2)),
    (
        "Reorder List #1",
        with_ids(1, 2, 3, 4),
        [operation("move", "Patient.identifier", source=3, destination=1)],
        with_ids(1, 4, 2, 3),
    ),
    (
        "Reorder List #2",
        with_ids(1, 2, 3, 4),
        [operation("move", "Patient.identifier", source=3, destination=0)],
        with_ids(4, 1, 2, 3),
    ),
    (
        "Reorder List #3",
        with_ids(1, 2, 3, 4),
        [operation("move", "Patient.identifier", source=3, destination=2)],
        with_ids(1, 2, 4, 3),
    ),
    (
        "Reorder List #4",
        with_ids(1, 2, 3, 4),
        [operation("move", "Patient.identifier", source=0, destination=3)],
        with_ids(2, 3, 4, 1),
    ),
    (
        "Reorder List #5",
        with_ids(1, 2, 3, 4),
        [
            operation("move", "Patient.identifier", source=1, destination=0),
            operation("move", "Patient.identifier", source=2, destination=1),
        ],
        with_ids(2, 3, 1, 4),
    ),
    (
        "Reorder List #6",
        with_ids(1, 2, 3, 4),
        [
            operation("move", "Patient.identifier", source=3, destination=0),
            operation("move", "Patient.identifier", source=3, destination=1),
            operation("move", "Patient.identifier", source=3, destination=2),
        ],
        with_ids(4, 3, 2, 1),
    ),
    (
        "Operation on missing element #2",
        {"resourceType": "Patient"},
        [operation("add", "Patient", name="identifier", value={"valueIdentifier": ident(3)})],
        with_ids(3),
    ),
    (
        "Consecutive operations",
        {
            "resourceType": "Patient",
            "id": "example",
            "contact": [
                {
                    "name": {
                        "family": "du Marché",
                        "_family": {
                            "extension": [
                                {"url": "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix", "valueString": "WW"}
                            ]
                        },
                        "given": ["Bénédicte"],
                    }
                }
            ],
        },
        [
            operation("add", "Patient.contact[0]", name="gender", value={"valueCode": "male"}),
            operation("add", "Patient", name="contact", value={"part": [{"name": "gender", "valueCode": "male"}]}),
        ],
        {
            "resourceType": "Patient",
            "id": "example",
            "contact": [
                {
                    "name": {
                        "family": "du Marché",
                        "_family": {
                            "extension": [
                                {"url": "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix", "valueString": "WW"}
                            ]
                        },
                        "given": ["Bénédicte"],
                    },
                    "gender": "male",
                },
                {"gender": "male"},
            ],
        },
    ),
]


@pytest.mark.parametrize("name,given,ops,expected", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_hl7_published_cases(name, given, ops, expected):
    assert fp_patch(given, *ops) == expected


def test_hl7_full_resource_case():
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers</b></p></div>'
    res = {
        "resourceType": "Patient",
        "id": "example",
        "text": {"status": "generated", "div": div},
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}, {"use": "usual", "given": ["Jim"]}],
        "birthDate": "1974-12-25",
        "_birthDate": {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}
            ]
        },
    }
    new_div = div.replace("Chalmers", "Chalmers1")
    out = fp_patch(
        res,
        operation("replace", "Patient.text.div", value={"valueString": new_div}),
        operation("replace", "Patient.name[0].family", value={"valueString": "Chalmers1"}),
    )
    expected = copy.deepcopy(res)
    expected["text"]["div"] = new_div
    expected["name"][0]["family"] = "Chalmers1"
    assert out == expected
