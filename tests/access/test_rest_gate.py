"""Attacks on the REST API as two patients, a guardian, staff of two organizations and backend
clients bound to each. Every refusal is preceded by the same request succeeding on the caller's
own data, so a refusal means the gate refused and not that the request was broken."""
from __future__ import annotations

import pytest

from access_helpers import ids, observation, text_of

SPELLINGS = ["Patient/pb/", "Patient/pb/_history/", "Patient/pb/_history/1/", "Patient/pb/_history/1",
             "http://testserver/fhir/Patient/pb", "http://testserver/fhir/Patient/pb/"]


# -- 1. reference spellings -------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_patient_cannot_write_into_another_record_by_any_spelling(world, spelling):  # noqa: ANN001
    own = world.post("A", "Observation", observation(spelling.replace("pb", "pa")))
    assert own.status_code == 201, text_of(own)
    r = world.post("A", "Observation", {**observation(spelling), "performer": [{"reference": "Patient/pa"}]})
    assert r.status_code == 403, text_of(r)
    # B's record holds only what B had: the attack wrote nothing there
    assert ids(world.get("B", "Observation?subject=Patient/pb").get_json()) == {"obs-b"}


@pytest.mark.parametrize("spelling", SPELLINGS[:3])
def test_consent_for_another_patient_is_refused(world, spelling):  # noqa: ANN001
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "provision": {"type": "permit", "actor": [{"role": {"coding": [{
                   "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                   "reference": {"reference": "Organization/org1"}}]}}
    own = world.post("A", "Consent", {**consent, "patient": {"reference": spelling.replace("pb", "pa")}})
    assert own.status_code == 201, text_of(own)
    for who in ("A", "S1", "SYS1"):
        r = world.post(who, "Consent", {**consent, "patient": {"reference": spelling}})
        assert r.status_code == 403, (who, text_of(r))
    # nothing shared: org1's staff still cannot read B
    assert world.get("S1", "Patient/pb").status_code == 404
    assert world.get("S1", "Observation/obs-b").status_code == 404


def test_staff_cannot_file_into_other_organizations_patient(world):  # noqa: ANN001
    assert world.post("S1", "Observation", observation("Patient/pa/")).status_code == 201
    for spelling in SPELLINGS:
        for who in ("S1", "SYS1"):
            r = world.post(who, "Observation", observation(spelling))
            assert r.status_code == 403, (who, spelling, text_of(r))


def test_every_spelling_is_indexed_as_the_same_patient(world):  # noqa: ANN001
    for spelling in ("Patient/pa/", "Patient/pa/_history/1/", "http://testserver/fhir/Patient/pa"):
        assert world.post("A", "Observation", observation(spelling, "spelled")).status_code == 201
    found = world.get("A", "Observation?subject=Patient/pa&code:text=spelled").get_json()
    assert found["total"] == 3
    assert world.get("A", "Patient/pa/Observation?code:text=spelled").get_json()["total"] == 3


def test_malformed_reference_links_to_nobody(world):  # noqa: ANN001
    # an id past 64 characters is not truncated into someone else's id
    long_id = "pb" + "x" * 70
    r = world.post("A", "Observation", {**observation(f"Patient/{long_id}"),
                                        "performer": [{"reference": "Patient/pa"}]})
    assert r.status_code == 201, text_of(r)
    assert world.get("B", f"Observation/{r.get_json()['id']}").status_code == 404


# -- 2. deleted data ---------------------------------------------------------------------------------
def _deleted_obs_of_b(world) -> str:  # noqa: ANN001
    r = world.post("S2", "Observation", observation("Patient/pb", "deleted-b"))
    assert r.status_code == 201
    oid = r.get_json()["id"]
    assert world.delete("S2", f"Observation/{oid}").status_code == 204
    return oid


def test_deleted_versions_keep_their_audience(world):  # noqa: ANN001
    oid = _deleted_obs_of_b(world)
    # B's own organization still sees the history of its deleted data
    own = world.get("S2", f"Observation/{oid}/_history").get_json()
    assert own["total"] == 2
    assert world.get("S2", f"Observation/{oid}/_history/1").status_code == 200
    assert world.get("B", f"Observation/{oid}/_history/1").status_code == 200
    for who in ("S1", "SYS1", "A", "G"):
        assert world.get(who, f"Observation/{oid}/_history/1").status_code == 404, who
        assert world.get(who, f"Observation/{oid}/_history").status_code == 404, who
        assert world.get(who, f"Observation/{oid}").status_code == 404, who
        for path in ("Observation/_history", "_history"):
            body = world.get(who, path).get_json()
            assert oid not in text_of(world.get(who, path)), (who, path)
            assert all(e.get("fullUrl", "").rsplit("/", 1)[-1] != oid for e in body.get("entry", []))


def test_put_to_a_deleted_id_of_another_patient_is_refused(world):  # noqa: ANN001
    oid = _deleted_obs_of_b(world)
    r = world.put("A", f"Observation/{oid}", observation("Patient/pa", "takeover", oid))
    assert r.status_code == 403, text_of(r)
    hist = world.admin_get(f"Observation/{oid}/_history").get_json()
    assert hist["total"] == 2  # no version added
    assert world.get("A", f"Observation/{oid}/_history").status_code == 404
    # the owner may bring it back
    back = world.put("S2", f"Observation/{oid}", observation("Patient/pb", "restored", oid))
    assert back.status_code == 201, text_of(back)


def test_put_does_not_tell_whether_an_id_exists(world):  # noqa: ANN001
    own = world.put("S1", "Patient/pa", {"resourceType": "Patient", "id": "pa", "active": True,
                                        "managingOrganization": {"reference": "Organization/org1"}})
    assert own.status_code == 200, text_of(own)
    taken = world.put("S1", "Patient/pb", {"resourceType": "Patient", "id": "pb",
                                          "managingOrganization": {"reference": "Organization/org1"}})
    free = world.put("S1", "Patient/never-used", {"resourceType": "Patient", "id": "never-used",
                                                 "managingOrganization": {"reference": "Organization/org1"}})
    assert taken.status_code == free.status_code == 403
    assert taken.get_json()["issue"][0]["diagnostics"].replace("pb", "X") == \
        free.get_json()["issue"][0]["diagnostics"].replace("never-used", "X")
    assert world.admin_get("Patient/pb").get_json()["managingOrganization"]["reference"] == "Organization/org2"


def test_conditional_update_with_someone_elses_id_in_the_body(world):  # noqa: ANN001
    r = world.put("S1", "Patient?identifier=urn:mrn|NEW-1",
                  {"resourceType": "Patient", "id": "pb", "identifier": [{"system": "urn:mrn", "value": "NEW-1"}],
                   "managingOrganization": {"reference": "Organization/org1"}})
    assert r.status_code == 403, text_of(r)
    assert world.admin_get("Patient/pb").get_json()["name"][0]["family"] == "Beta"


# -- 5. AuditEvents and other records naming several patients -------------------------------------
def _audit(*pids: str) -> dict:
    return {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                   "code": "110110"},
            "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True, "who": {"display": "x"}}],
            "source": {"observer": {"display": "test"}},
            "entity": [{"what": {"reference": f"Patient/{p}"}} for p in pids]}


def test_audit_events_naming_other_patients_are_hidden(world):  # noqa: ANN001
    world.seed([{**_audit("pa"), "id": "ae-a"}, {**_audit("pa", "pb"), "id": "ae-ab"}, {**_audit("pb"), "id": "ae-b"}])
    seen = ids(world.get("A", "AuditEvent?_count=500").get_json())
    assert "ae-a" in seen
    assert not seen & {"ae-ab", "ae-b"}
    assert world.get("A", "AuditEvent/ae-ab").status_code == 404
    assert "ae-ab" not in ids(world.get("A", "Patient/pa/AuditEvent").get_json())
    # staff: only events of their own organization's patients
    s1 = ids(world.get("S1", "AuditEvent?_count=500").get_json())
    assert "ae-a" in s1 and not s1 & {"ae-ab", "ae-b"}
    assert {"ae-b"} <= ids(world.get("S2", "AuditEvent?_count=500").get_json())


def test_group_listing_other_patients_is_hidden(world):  # noqa: ANN001
    world.seed([{"resourceType": "Group", "id": "grp-a", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": "Patient/pa"}}]},
                {"resourceType": "Group", "id": "grp-ab", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": "Patient/pa"}}, {"entity": {"reference": "Patient/pb"}}]}])
    assert world.get("A", "Group/grp-a").status_code == 200
    assert world.get("A", "Group/grp-ab").status_code == 404
    assert world.get("S1", "Group/grp-ab").status_code == 404


# -- 8. smaller ones --------------------------------------------------------------------------------
def test_device_of_a_patient_is_that_patients_data(world):  # noqa: ANN001
    world.seed([{"resourceType": "Device", "id": "dev-a", "patient": {"reference": "Patient/pa"}},
                {"resourceType": "Device", "id": "dev-b", "patient": {"reference": "Patient/pb"}}])
    assert world.get("A", "Device/dev-a").status_code == 200
    assert world.get("B", "Device/dev-b").status_code == 200
    assert world.get("S2", "Device/dev-b").status_code == 200
    for who in ("A", "S1", "SYS1", "G"):
        assert world.get(who, "Device/dev-b").status_code == 404, who
        assert "dev-b" not in ids(world.get(who, "Device").get_json()), who
    assert ids(world.get("A", "Patient/pa/Device").get_json()) == {"dev-a"}


def test_patient_cannot_delete_a_message_it_may_not_change(world):  # noqa: ANN001
    world.seed([{"resourceType": "Communication", "id": "msg-a", "status": "completed",
                 "subject": {"reference": "Patient/pa"}, "recipient": [{"reference": "Patient/pa"}]},
                {"resourceType": "Communication", "id": "msg-ab", "status": "completed",
                 "subject": {"reference": "Patient/pa"}, "recipient": [{"reference": "Patient/pb"}]}])
    assert world.get("A", "Communication/msg-ab").status_code == 200  # A is its subject
    r = world.put("A", "Communication/msg-ab", {"resourceType": "Communication", "id": "msg-ab",
                                                "status": "completed", "subject": {"reference": "Patient/pa"}})
    assert r.status_code == 403, text_of(r)
    assert world.delete("A", "Communication/msg-ab").status_code == 403
    assert world.admin_get("Communication/msg-ab").status_code == 200
    assert world.delete("A", "Communication/msg-a").status_code == 204


def test_guardian_reaches_the_child_only(world):  # noqa: ANN001
    assert world.get("G", "Observation/obs-c").status_code == 200
    for oid in ("obs-a", "obs-b"):
        assert world.get("G", f"Observation/{oid}").status_code == 404
    assert world.post("G", "Observation", observation("Patient/pc/")).status_code == 201
    assert world.post("G", "Observation", observation("Patient/pa/")).status_code == 403


# -- Bundles, conditional forms, search features -------------------------------------------------------
def test_transaction_entry_into_another_record_rolls_back_whole(world):  # noqa: ANN001
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": observation("Patient/pa", "tx-own"),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation("Patient/pb/_history/1/", "tx-attack"),
         "request": {"method": "POST", "url": "Observation"}}]}
    ok = world.post("A", "", {**bundle, "entry": bundle["entry"][:1]})
    assert ok.status_code == 200, text_of(ok)
    r = world.post("A", "", bundle)
    assert r.status_code == 403, text_of(r)
    assert world.admin_get("Observation?code:text=tx-attack").get_json()["total"] == 0
    assert world.admin_get("Observation?code:text=tx-own").get_json()["total"] == 1


def test_batch_entries_are_gated_one_by_one(world):  # noqa: ANN001
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/obs-a"}},
        {"request": {"method": "GET", "url": "Observation/obs-b"}},
        {"request": {"method": "GET", "url": "Observation/obs-b/_history/1"}},
        {"request": {"method": "DELETE", "url": "Observation/obs-b"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pb"}}]}
    out = world.post("A", "", bundle).get_json()
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses[0] == "200"
    assert statuses[1] == "404" and statuses[2] == "404"
    assert "b-secret" not in str(out)
    assert world.admin_get("Observation/obs-b").status_code == 200


def test_conditional_forms_do_not_reach_other_records(world):  # noqa: ANN001
    # conditional delete / patch / update matching B's Patient by its identifier
    assert world.delete("S1", "Patient?identifier=urn:mrn|B-1").status_code == 204
    assert world.admin_get("Patient/pb").status_code == 200
    r = world.c.patch("/fhir/Patient?identifier=urn:mrn|B-1", headers=world.h(
        "S1", **{"Content-Type": "application/json-patch+json"}),
        data='[{"op":"replace","path":"/active","value":false}]')
    assert r.status_code == 404, text_of(r)
    # If-None-Exist does not reveal B's resource
    r = world.post("S1", "Patient", {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "B-1"}],
                                     "managingOrganization": {"reference": "Organization/org1"}},
                   **{"If-None-Exist": "identifier=urn:mrn|B-1"})
    assert r.status_code == 201 and r.get_json()["id"] != "pb"


def test_search_features_stay_inside_the_audience(world):  # noqa: ANN001
    own = world.get("S1", "Patient?_revinclude=Observation:subject&_count=100").get_json()
    assert "obs-a" in ids(own)
    for who in ("S1", "SYS1", "A"):
        for q in ("Patient?_revinclude=Observation:subject", "Observation?_include=Observation:subject",
                  "Observation?subject.family=Beta", "Patient?_has:Observation:subject:code:text=b-secret",
                  "Observation?code:text=b-secret", "Patient/pb/Observation", "Patient/pb/$everything"):
            r = world.get(who, q)
            entries = str([e for e in (r.get_json() or {}).get("entry", [])])
            assert "b-secret" not in entries and "'pb'" not in entries, (who, q, entries[:300])


def test_unassigned_data_belongs_to_the_organization_that_wrote_it(world):  # noqa: ANN001
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "unassigned-org2"},
              "meta": {"tag": [{"system": "urn:fhirserver:owner", "code": "org1"}]}}  # a forged owner
    r = world.post("S2", "DiagnosticReport", report)
    assert r.status_code == 201, text_of(r)
    rid = r.get_json()["id"]
    assert {"system": "urn:fhirserver:owner", "code": "org2"} in r.get_json()["meta"]["tag"]
    assert world.get("S2", f"DiagnosticReport/{rid}").status_code == 200
    assert world.get("SYS2", f"DiagnosticReport/{rid}").status_code == 200
    for who in ("S1", "SYS1", "A", "B"):
        assert world.get(who, f"DiagnosticReport/{rid}").status_code == 404, who
        assert rid not in ids(world.get(who, "DiagnosticReport?code:text=unassigned-org2").get_json()), who
    # once org2 files it to its patient, the patient sees it too
    filed = {**world.get("S2", f"DiagnosticReport/{rid}").get_json(), "subject": {"reference": "Patient/pb"}}
    assert world.put("S2", f"DiagnosticReport/{rid}", filed).status_code == 200
    assert world.get("B", f"DiagnosticReport/{rid}").status_code == 200
    assert world.get("S1", f"DiagnosticReport/{rid}").status_code == 404


def _sharing_consent(pid: str, org: str) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"},
            "provision": {"type": "permit", "actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                "reference": {"reference": f"Organization/{org}"}}]}}


def test_only_the_patient_shares_their_record_with_another_organization(world):  # noqa: ANN001
    # the clinic may record a consent that keeps the data at home...
    assert world.post("S1", "Consent", _sharing_consent("pa", "org1")).status_code == 201
    # ...but not open its patient's record to another organization
    for who in ("S1", "SYS1"):
        r = world.post(who, "Consent", _sharing_consent("pa", "org2"))
        assert r.status_code == 403, (who, text_of(r))
    assert world.get("S2", "Observation/obs-a").status_code == 404
    # the patient may
    assert world.post("A", "Consent", _sharing_consent("pa", "org2")).status_code == 201
    assert world.get("S2", "Observation/obs-a").status_code == 200


def test_nobody_but_the_server_edits_the_audit_trail(world):  # noqa: ANN001
    world.seed([{**_audit("pa"), "id": "ae-own"}])
    assert world.get("A", "AuditEvent/ae-own").status_code == 200
    for who in ("A", "S1", "SYS1"):
        assert world.post(who, "AuditEvent", _audit("pa")).status_code == 403, who
        assert world.put(who, "AuditEvent/ae-own", {**_audit("pa"), "id": "ae-own"}).status_code == 403, who
        assert world.delete(who, "AuditEvent/ae-own").status_code == 403, who
    assert world.admin_get("AuditEvent/ae-own").status_code == 200
