"""Patient/$everything: the patient's compartment plus what it references, paged, under access rules."""
from __future__ import annotations

from tests.conftest import fhir_json
from tests.search.search_helpers import put


def test_everything(client) -> None:  # noqa: ANN001
    put(client, {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Who"}]})
    put(client, {"resourceType": "Patient", "id": "ev", "generalPractitioner": [{"reference": "Practitioner/doc"}]})
    put(client, {"resourceType": "Patient", "id": "other"})
    for i in range(3):
        put(client, {"resourceType": "Observation", "id": f"ev-o{i}", "status": "final", "code": {"text": "x"},
                     "subject": {"reference": "Patient/ev"}, "performer": [{"reference": "Practitioner/doc"}]})
    put(client, {"resourceType": "Observation", "id": "other-o", "status": "final", "code": {"text": "x"},
                 "subject": {"reference": "Patient/other"}})
    b = fhir_json(client.get("/fhir/Patient/ev/$everything"))
    got = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b["entry"])
    assert got == ["Observation/ev-o0", "Observation/ev-o1", "Observation/ev-o2", "Patient/ev", "Practitioner/doc"]
    typed = fhir_json(client.get("/fhir/Patient/ev/$everything?_type=Observation&_count=2"))
    assert [e["resource"]["resourceType"] for e in typed["entry"] if e["search"]["mode"] == "match"] == ["Observation"] * 2
    assert any(link["relation"] == "next" for link in typed["link"])
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get("/fhir/Patient/ev/$everything?bogus=1").status_code == 400
    cs = fhir_json(client.get("/fhir/metadata"))
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"} \
        in patient["operation"]
