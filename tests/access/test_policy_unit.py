"""The policy on its own: the canonical reference parser, every principal kind against writes of
each compartment, and row filters over deleted rows, straight on the repository."""
from __future__ import annotations

import json

import pytest

from fhirserver.access import OpenPolicy, Principal, parse_scopes
from fhirserver.errors import FhirError
from fhirserver.model.references import parse_reference, referenced_ids
from fhirserver.search.registry import compartment_params, patient_compartment_types
from smart_auth.fhir import build_policy

BASE = "http://testserver/fhir"


@pytest.mark.parametrize("value,expected", [
    ("Patient/B", ("local", "Patient", "B", None)),
    ("Patient/B/", ("local", "Patient", "B", None)),
    ("Patient/B/_history/", ("local", "Patient", "B", None)),
    ("Patient/B/_history/3", ("local", "Patient", "B", "3")),
    ("Patient/B/_history/3/", ("local", "Patient", "B", "3")),
    (f"{BASE}/Patient/B", ("local", "Patient", "B", None)),
    (f"{BASE}/Patient/B/_history/2", ("local", "Patient", "B", "2")),
    ("http://elsewhere.example/fhir/Patient/B", ("external", None, None, None)),
    ("#contained-1", ("contained", None, None, None)),
    ("urn:uuid:1f0a", ("urn", None, None, None)),
    ("Patient/" + "x" * 65, ("invalid", None, None, None)),
    ("Patient//B", ("invalid", None, None, None)),
    ("Patient/B/extra", ("invalid", None, None, None)),
    ("Patient/B?x=1", ("invalid", None, None, None)),
    ("NotAType/B", ("invalid", None, None, None)),
    (" Patient/B", ("invalid", None, None, None)),
    (f"{BASE}/Patient/B/junk", ("invalid", None, None, None)),
    ("", ("invalid", None, None, None)),
])
def test_one_reading_of_every_spelling(value, expected):  # noqa: ANN001
    ref = parse_reference(value, BASE)
    assert (ref.kind, ref.res_type, ref.res_id, ref.version) == expected


def test_referenced_ids_skip_contained_resources():
    body = {"resourceType": "Observation", "subject": {"reference": "Patient/a/"},
            "performer": [{"reference": f"{BASE}/Patient/b"}],
            "contained": [{"resourceType": "Patient", "id": "x", "link": [{"other": {"reference": "Patient/c"}}]}]}
    assert referenced_ids(body, "Patient", BASE) == {"a", "b"}


def test_patient_compartment_covers_patient_data_outside_r4():
    types = patient_compartment_types()
    assert {"Observation", "AuditEvent", "Device", "Task", "Patient"} <= types
    assert compartment_params()["Patient"]["Device"] == ("patient",)
    assert "Organization" not in types and "Practitioner" not in types


def _principal(role: str, **kw) -> Principal:  # noqa: ANN003
    scope = kw.pop("scope", "patient/*.cruds" if role in ("patient", "guardian") else
                   ("system/*.cruds" if role == "system" else "user/*.cruds"))
    return Principal(client_id="t", role=role, scopes=tuple(parse_scopes(scope.split())), scope_text=scope, **kw)


PRINCIPALS = {
    "patient A": dict(role="patient", patient="pa", patients=("pa",), fhir_user="Patient/pa"),
    "guardian of C": dict(role="guardian", patients=("pc",), fhir_user="RelatedPerson/g"),
    "staff org1": dict(role="staff", organizations=("org1",), fhir_user="Practitioner/s1"),
    "system org1": dict(role="system", organizations=("org1",)),
    "admin": dict(role="admin"),
    "system unbound": dict(role="system"),
}


def _obs(ref: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": ref}}


WRITES = {  # body -> principals allowed to write it
    "obs A": (_obs("Patient/pa"), {"patient A", "staff org1", "system org1", "admin", "system unbound"}),
    "obs B/": (_obs("Patient/pb/"), {"admin", "system unbound"}),
    "obs B/_history/": (_obs("Patient/pb/_history/"), {"admin", "system unbound"}),
    "obs B abs": (_obs(f"{BASE}/Patient/pb"), {"admin", "system unbound"}),
    "obs C": (_obs("Patient/pc/_history/1/"), {"guardian of C", "staff org1", "system org1", "admin",
                                               "system unbound"}),
    "device B": ({"resourceType": "Device", "patient": {"reference": "Patient/pb/"}}, {"admin", "system unbound"}),
    "patient B": ({"resourceType": "Patient", "id": "pb", "managingOrganization": {"reference": "Organization/org2"}},
                  {"admin", "system unbound"}),
    "patient A linked to B": ({"resourceType": "Patient", "id": "pa",
                               "managingOrganization": {"reference": "Organization/org1"},
                               "link": [{"other": {"reference": "Patient/pb/"}, "type": "seealso"}]},
                              {"admin", "system unbound"}),
    "organization": ({"resourceType": "Organization", "name": "x"}, {"staff org1", "system org1", "admin",
                                                                     "system unbound"}),
}


@pytest.fixture()
def seeded(client, settings):  # noqa: ANN001, ANN201
    for res in ({"resourceType": "Patient", "id": "pa", "managingOrganization": {"reference": "Organization/org1"}},
                {"resourceType": "Patient", "id": "pb", "managingOrganization": {"reference": "Organization/org2"}},
                {"resourceType": "Patient", "id": "pc", "birthDate": "2020-01-01",
                 "managingOrganization": {"reference": "Organization/org1"}}):
        assert client.put(f"/fhir/Patient/{res['id']}", json=res).status_code in (200, 201)
    return client.application.extensions["fhirserver"]


@pytest.mark.parametrize("body_name", sorted(WRITES))
def test_write_check_matrix(seeded, settings, body_name):  # noqa: ANN001
    body, allowed = WRITES[body_name]
    for name, kw in PRINCIPALS.items():
        policy = build_policy(seeded.repo, settings, _principal(**kw))
        try:
            policy.check_write(body["resourceType"], body)
            ok = True
        except FhirError as exc:
            assert exc.status in (403, 409)
            ok = False
        assert ok == (name in allowed), (name, body_name)


def test_read_only_scopes_refuse_every_write_interaction(seeded, settings):  # noqa: ANN001
    policy = build_policy(seeded.repo, settings, _principal("staff", organizations=("org1",), scope="user/*.rs"))
    policy.check_interaction("read", "Observation")
    for interaction in ("create", "update", "patch", "delete"):
        with pytest.raises(FhirError) as err:
            policy.check_interaction(interaction, "Observation")
        assert err.value.status == 403


def test_new_ids_only_for_full_access(seeded, settings):  # noqa: ANN001
    OpenPolicy().check_new_id("Patient")
    build_policy(seeded.repo, settings, _principal("admin")).check_new_id("Patient")
    for kw in (PRINCIPALS["patient A"], PRINCIPALS["staff org1"], PRINCIPALS["system org1"]):
        with pytest.raises(FhirError):
            build_policy(seeded.repo, settings, _principal(**kw)).check_new_id("Observation")


def test_deleted_rows_keep_their_audience(seeded, settings, client):  # noqa: ANN001
    r = client.post("/fhir/Observation", json=_obs("Patient/pb"))
    oid = r.get_json()["id"]
    assert client.delete(f"/fhir/Observation/{oid}").status_code == 204
    repo = seeded.repo

    def sees(kw: dict) -> tuple[bool, int]:
        policy = build_policy(repo, settings, _principal(**kw))
        with repo.transaction() as tx:
            cur = tx.current("Observation", oid, where=policy.row_filter("Observation"))
            rows, _total = tx.history("Observation", oid, where=policy.row_filter("Observation"))
            every, _t = tx.history(None, None, where=policy.row_filter(None))
        return cur is not None, len(rows) + sum(1 for x in every if x.res_id == oid)

    assert sees(dict(role="staff", organizations=("org2",))) == (True, 4)
    assert sees(dict(role="patient", patient="pb", patients=("pb",))) == (True, 4)
    for name in ("patient A", "guardian of C", "staff org1", "system org1"):
        assert sees(PRINCIPALS[name]) == (False, 0), name
    assert sees(PRINCIPALS["admin"]) == (True, 4)


def test_audit_event_needs_every_named_patient(seeded, settings, client):  # noqa: ANN001
    ev = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                 "code": "110110"}, "recorded": "2026-01-01T00:00:00Z",
          "agent": [{"requestor": True, "who": {"display": "x"}}], "source": {"observer": {"display": "t"}}}
    for aid, pids in (("one", ("pa",)), ("two", ("pa", "pb")), ("none", ())):
        body = {**ev, "id": aid, "entity": [{"what": {"reference": f"Patient/{p}"}} for p in pids]
                or [{"what": {"display": "login"}}]}
        assert client.put(f"/fhir/AuditEvent/{aid}", data=json.dumps(body),
                          headers={"Content-Type": "application/fhir+json"}).status_code == 201
    repo = seeded.repo

    def visible(kw: dict) -> set[str]:
        policy = build_policy(repo, settings, _principal(**kw))
        with repo.transaction() as tx:
            rows, _t, _m, _c = tx.search("AuditEvent", policy.row_filter("AuditEvent"), count=10)
        return {r.res_id for r in rows}

    assert visible(PRINCIPALS["patient A"]) == {"one"}
    assert visible(PRINCIPALS["staff org1"]) == {"one", "none"}
    assert visible(dict(role="staff", organizations=("org1", "org2"))) == {"one", "two", "none"}
    assert visible(PRINCIPALS["admin"]) == {"one", "two", "none"}


def test_reindex_restores_the_audience_of_rows_deleted_before_it_was_kept(seeded, settings, client):  # noqa: ANN001
    from sqlalchemy import delete, select

    from fhirserver.storage.tables import resource, resource_compartment

    oid = client.post("/fhir/Observation", json=_obs("Patient/pb")).get_json()["id"]
    assert client.delete(f"/fhir/Observation/{oid}").status_code == 204
    repo = seeded.repo
    with repo.engine.begin() as c:  # what older versions of the server left behind
        pk = c.execute(select(resource.c.pk).where(resource.c.res_id == oid)).scalar_one()
        c.execute(delete(resource_compartment).where(resource_compartment.c.res_pk == pk))
    staff1 = build_policy(repo, settings, _principal("staff", organizations=("org1",)))
    staff2 = build_policy(repo, settings, _principal("staff", organizations=("org2",)))
    with repo.transaction() as tx:  # fails closed until the reindex
        assert tx.current("Observation", oid, where=staff1.row_filter("Observation")) is None
        assert tx.current("Observation", oid, where=staff2.row_filter("Observation")) is None
    assert client.post("/fhir/$reindex").status_code == 200
    with repo.transaction() as tx:
        assert tx.current("Observation", oid, where=staff2.row_filter("Observation")) is not None
        assert tx.current("Observation", oid, where=staff1.row_filter("Observation")) is None
