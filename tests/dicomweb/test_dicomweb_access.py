"""DICOMweb under the FHIR API's access rules: bearer tokens, patient compartments, audit."""
from __future__ import annotations

from pydicom.uid import generate_uid

from dicom.web import flush_audits
from dw_helpers import STOW_TYPE, ct_bytes, multipart, uid_of, value
from smart_auth import store

DW = "/dicomweb"


def _token(engine, scope: str, context: dict, client_id: str = "viewer-app") -> str:  # noqa: ANN001
    tok, _pk = store.save_token(engine, kind="access", grant_id=generate_uid(), client_id=client_id,
                                user_pk=None, scope=scope, context=context, lifetime=3600)
    return tok


def _seed(dw):  # noqa: ANN001, ANN202
    for pid, org, mrn in (("a", "org1", "MRN-A"), ("b", "org1", "MRN-B"), ("c", "org2", "MRN-C")):
        r = dw.put(f"/fhir/Organization/{org}", json={"resourceType": "Organization", "id": org, "name": org},
                   headers={"Content-Type": "application/fhir+json"})
        assert r.status_code in (200, 201)
        r = dw.put(f"/fhir/Patient/{pid}", json={
            "resourceType": "Patient", "id": pid, "identifier": [{"value": mrn}],
            "managingOrganization": {"reference": f"Organization/{org}"}},
            headers={"Content-Type": "application/fhir+json"})
        assert r.status_code in (200, 201), r.data
    studies = {}
    for pid, mrn in (("a", "MRN-A"), ("b", "MRN-B"), ("c", "MRN-C")):
        study, series = generate_uid(), generate_uid()
        part = ct_bytes(patient_id=mrn, study_uid=study, series_uid=series)
        r = dw.post(f"{DW}/studies", data=multipart([part]), headers={"Content-Type": STOW_TYPE})
        assert r.status_code == 200, r.data
        studies[pid] = (study, series, uid_of(part))
    for pid, (study, _s, _i) in studies.items():  # the bridge matched the DICOM PatientID
        ims = dw.get(f"/fhir/ImagingStudy?identifier=urn:oid:{study}").get_json()["entry"][0]["resource"]
        assert ims["subject"]["reference"] == f"Patient/{pid}"
    return studies


def test_patient_token_sees_only_its_studies(dw_secure, dw):
    studies = _seed(dw)
    c = dw_secure.test_client()
    engine = dw_secure.extensions["fhirserver"].repo.engine
    # no token: 401 with a Bearer challenge, like /fhir
    r = c.get(f"{DW}/studies")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.get_json()["resourceType"] == "OperationOutcome"
    r = c.get(f"{DW}/studies", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]

    tok = _token(engine, "launch/patient patient/*.rs", {"role": "patient", "patient": "a", "patients": ["a"],
                                                         "fhirUser": "Patient/a"})
    h = {"Authorization": f"Bearer {tok}"}
    found = c.get(f"{DW}/studies", headers=h).get_json()
    assert [value(s, "0020000D") for s in found] == [studies["a"][0]]
    assert c.get(f"{DW}/instances", headers=h).get_json().__len__() == 1
    assert c.get(f"{DW}/studies?PatientID=MRN-B", headers=h).get_json() == []
    a_study, a_series, a_sop = studies["a"]
    r = c.get(f"{DW}/studies/{a_study}", headers=h)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("multipart/related")
    assert c.get(f"{DW}/studies/{a_study}/thumbnail", headers=h).status_code == 200
    # the other patient's study does not exist for this token
    b_study, b_series, b_sop = studies["b"]
    for url in (f"{DW}/studies/{b_study}", f"{DW}/studies/{b_study}/metadata", f"{DW}/studies/{b_study}/series",
                f"{DW}/studies/{b_study}/thumbnail",
                f"{DW}/studies/{b_study}/series/{b_series}/instances/{b_sop}/rendered",
                f"{DW}/studies/{b_study}/series/{b_series}/instances/{b_sop}/frames/1",
                f"{DW}/wado?requestType=WADO&studyUID={b_study}&seriesUID={b_series}&objectUID={b_sop}"):
        assert c.get(url, headers=h).status_code == 404, url
    # a read-only token may not store
    r = c.post(f"{DW}/studies", data=multipart([ct_bytes(patient_id="MRN-A")]),
               headers={**h, "Content-Type": STOW_TYPE})
    assert r.status_code == 403
    # a token without ImagingStudy scopes: 403
    obs = _token(engine, "patient/Observation.rs", {"role": "patient", "patient": "a", "patients": ["a"]})
    assert c.get(f"{DW}/studies", headers={"Authorization": f"Bearer {obs}"}).status_code == 403
    # each access audited with the client and the user
    flush_audits(dw_secure)  # written in batches by a background thread
    events = dw.get("/fhir/AuditEvent?_count=500").get_json()["entry"]
    mine = [e["resource"] for e in events
            if any(a["who"].get("identifier", {}).get("value") == "viewer-app" for a in e["resource"]["agent"])]
    assert len(mine) >= 4
    assert all(any(a["who"].get("reference") == "Patient/a" for a in ev["agent"]) for ev in mine)
    assert not any(f"Patient/b" == en["what"].get("reference") for ev in mine for en in ev["entity"])


def test_staff_token_sees_its_organization_and_may_store(dw_secure, dw):
    studies = _seed(dw)
    c = dw_secure.test_client()
    engine = dw_secure.extensions["fhirserver"].repo.engine
    tok = _token(engine, "user/*.cruds", {"role": "staff", "organizations": ["org1"]}, client_id="ris")
    h = {"Authorization": f"Bearer {tok}"}
    seen = {value(s, "0020000D") for s in c.get(f"{DW}/studies", headers=h).get_json()}
    assert seen == {studies["a"][0], studies["b"][0]}
    c_study = studies["c"][0]
    assert c.get(f"{DW}/studies/{c_study}/metadata", headers=h).status_code == 404
    # storing into a study outside the token's access is refused for that instance
    part = ct_bytes(patient_id="MRN-C", study_uid=c_study)
    r = c.post(f"{DW}/studies", data=multipart([part]), headers={**h, "Content-Type": STOW_TYPE})
    assert r.status_code == 409 and value(r.get_json()["00081198"]["Value"][0], "00081197") == 0x0124
    # a new study for an org1 patient is stored and then visible
    part = ct_bytes(patient_id="MRN-A")
    r = c.post(f"{DW}/studies", data=multipart([part]), headers={**h, "Content-Type": STOW_TYPE})
    assert r.status_code == 200, r.data
    assert len(c.get(f"{DW}/studies", headers=h).get_json()) == 3
