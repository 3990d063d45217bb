"""The one schema table: built on first use (not at import), shared by XML, patch and code
validation, and exact for the R4 types R4B reshaped (from the data file)."""
from __future__ import annotations

import subprocess
import sys

from fhirserver.model import xml
from fhirserver.model.patch import fhirpath_patch
from fhirserver.model.schema import COMPLEX, J_DEC, PRIM, RESOURCE, schema
from fhirserver.model.validate import InvalidResource, validate_resource


def test_nothing_built_at_import() -> None:
    code = ("import fhirserver.model.xml, fhirserver.model.patch, fhirserver.model.validate, "
            "fhirserver.search.paths\n"
            "from fhirserver.model import schema, fhirpath\n"
            "assert schema.schema.cache_info().currsize == 0\n"
            "assert fhirpath.fhirpath.cache_info().currsize == 0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_patient_elements() -> None:
    patient = schema().resource("Patient")
    assert patient.order[:3] == ("id", "meta", "implicitRules")
    assert patient.elements["name"].is_list and patient.elements["name"].kind == COMPLEX
    assert patient.elements["deceasedBoolean"].choice == "deceased"
    assert patient.elements["gender"].codes == {"male", "female", "other", "unknown"}
    assert patient.elements["contained"].kind == RESOURCE
    assert schema().resource("Observation").elements["valueQuantity"].choice == "value"
    assert schema().named("Quantity").elements["value"].jtype == J_DEC
    assert schema().resource("NotAType") is None and schema().named("NotAType") is None


def test_r4_differences_from_the_data_file() -> None:
    ext = schema().named("Extension")
    assert "valueMeta" in ext.elements and "valueCodeableReference" not in ext.elements
    assert ext.elements["valueMeta"].choice == "value"
    product = schema().resource("MedicinalProduct")  # R4 only: described by the table
    assert product is not None and product.elements["name"].is_list
    assert product.elements["name"].kind == COMPLEX and product.elements["specialMeasures"].kind == PRIM


def test_consumers_share_one_table() -> None:
    patient = schema().resource("Patient")
    assert xml._resource_info("Patient").order == patient.order
    assert fhirpath_patch._MODEL.named_class("Patient") is patient
    assert fhirpath_patch._MODEL.field(patient, "deceasedBoolean").choice_base == "deceased"


def test_required_binding_checked() -> None:
    try:
        validate_resource({"resourceType": "Patient", "gender": "robot"})
    except InvalidResource as exc:
        assert any(i.code == "code-invalid" for i in exc.issues)
    else:
        raise AssertionError("an unknown gender code must be refused")
    validate_resource({"resourceType": "Patient", "gender": "female",
                       "contact": [{"gender": "male"}]})
