"""The patients' lifecycle (invite, activate, unlink, close, share, erase) end to end through the
FHIR API, as staff and as patient."""
from __future__ import annotations

import json
import os
import re
import subprocess

from lc_helpers import H, JSON, PATIENT_SCOPE, STAFF_SCOPE, link_in, login, params, pval
from smart_auth import store

PW = "staffpass123"


def _seed(lapp):  # noqa: ANN001, ANN202
    eng = lapp.extensions["fhirserver"].repo.engine
    c = lapp.test_client()
    with lapp.extensions["fhirserver"].repo.transaction(write=True) as tx:
        for o in ("o1", "o2", "o3"):
            tx.update("Organization", o, {"resourceType": "Organization", "id": o, "name": f"Clinic {o}"})
        for pr in ("d1", "d2", "d3"):
            tx.update("Practitioner", pr, {"resourceType": "Practitioner", "id": pr, "name": [{"family": pr}]})
    toks = {}
    for n, org in (("d1", "o1"), ("d2", "o2"), ("d3", "o3")):
        store.add_user(eng, username=n, password=PW, role="staff", fhir_user=f"Practitioner/{n}", organizations=[org])
        toks[n] = login(c, eng, n, PW, STAFF_SCOPE)
    return c, eng, toks


def _patient(c, tok, org, given="Ann", family="Lee", email="ann@example.org", **extra):  # noqa: ANN001, ANN202
    body = {"resourceType": "Patient", "name": [{"given": [given], "family": family}],
            "managingOrganization": {"reference": f"Organization/{org}"}, **extra}
    if email:
        body["telecom"] = [{"system": "email", "value": email}]
    r = c.post("/fhir/Patient", json=body, headers=H(tok))
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["id"]


def _activate(c, smtp, email, mobile="+34 600 111 222"):  # noqa: ANN001, ANN202
    link = link_in(smtp.to(email)[-1]["body"])
    path = link.split("testserver", 1)[-1]
    assert c.get(path).status_code == 200
    token = path.split("token=")[1]
    r = c.post("/auth/activate", data={"token": token, "password": "mypassword1", "mobile": mobile,
                                       "security_question": "First pet?", "security_answer": "Rex"})
    assert r.status_code == 200, r.get_data(as_text=True)
    return path


def _invite(c, tok, ref, **kw):  # noqa: ANN001, ANN202
    return c.post(f"/fhir/{ref}/$invite", json=params(password=PW, **kw), headers=H(tok))


def test_walls_alias_find_by_email_reports_and_invitation(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    pid = _patient(c, t["d1"], "o1")
    # the walls: another organization neither reads nor finds the patient
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d2"])).status_code == 404
    assert c.get("/fhir/Patient?family=Lee", headers=H(t["d2"])).get_json().get("total", 0) == 0
    r = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "X"}],
                                      "managingOrganization": {"reference": "Organization/o1"}}, headers=H(t["d2"]))
    assert r.status_code == 403
    # alias patient: a pseudonym and an identifier, no personal data
    alias = c.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:alias", "value": "ALIAS-7"}],
                                          "managingOrganization": {"reference": "Organization/o1"}}, headers=H(t["d1"]))
    assert alias.status_code == 201
    # find by email: answers only "exists"
    r = c.post("/fhir/Patient/$find-by-email", json=params(email="ANN@example.org"), headers=H(t["d2"]))
    assert r.status_code == 200 and pval(r.get_json(), "exists") is True and pid not in r.get_data(as_text=True)
    r = c.post("/fhir/Patient/$find-by-email", json=params(email="nobody@example.org"), headers=H(t["d2"]))
    assert pval(r.get_json(), "exists") is False
    assert c.post("/fhir/Patient/$find-by-email", json=params(email="not an email"), headers=H(t["d2"])).status_code == 422
    # a report without a patient, found later by keyword and attached by updating its subject
    r = c.post("/fhir/DiagnosticReport", json={"resourceType": "DiagnosticReport", "status": "final",
                                               "code": {"text": "VR session knee-rehab-lee"}}, headers=H(t["d1"]))
    assert r.status_code == 201
    rep = r.get_json()
    found = c.get("/fhir/DiagnosticReport?_content=knee-rehab-lee", headers=H(t["d1"])).get_json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [rep["id"]]
    rep["subject"] = {"reference": f"Patient/{pid}"}
    assert c.put(f"/fhir/DiagnosticReport/{rep['id']}", json=rep, headers=H(t["d1"])).status_code == 200
    assert c.get(f"/fhir/DiagnosticReport?subject=Patient/{pid}", headers=H(t["d1"])).get_json()["total"] == 1
    # invitation: confirm with own password; bad email 422; missing names 422
    assert _invite(c, t["d1"], f"Patient/{pid}", password_="x").status_code in (200, 403)
    r = c.post(f"/fhir/Patient/{pid}/$invite", json=params(password="wrong-password"), headers=H(t["d1"]))
    assert r.status_code == 403
    r = _invite(c, t["d1"], f"Patient/{pid}", email="ann@@bad")
    assert r.status_code == 422 and "not a valid email" in r.get_data(as_text=True)
    r = _invite(c, t["d1"], f"Patient/{alias.get_json()['id']}", email="alias@example.org")
    assert r.status_code == 422  # no first/last name
    assert _invite(c, t["d2"], f"Patient/{pid}").status_code == 404  # other organization
    smtp_server.messages.clear()
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200  # resend
    mails = smtp_server.to("ann@example.org")
    assert len(mails) == 2
    old = link_in(mails[0]["body"]).split("testserver", 1)[-1]
    assert c.get(old).status_code == 410  # superseded by the resend
    new = link_in(mails[1]["body"]).split("testserver", 1)[-1]
    r = c.post("/auth/activate", data={"token": new.split("token=")[1], "password": "mypassword1", "mobile": "abc",
                                       "security_question": "q", "security_answer": "a"})
    assert r.status_code == 400 and "mobile" in r.get_data(as_text=True)
    used = _activate(c, smtp_server, "ann@example.org")
    assert c.get(used).status_code == 410  # single use
    pt = login(c, eng, "ann@example.org", "mypassword1", PATIENT_SCOPE)
    assert pt["patient"] == pid
    assert c.get(f"/fhir/Patient/{pid}", headers=H(pt)).status_code == 200
    assert c.get(f"/fhir/DiagnosticReport?subject=Patient/{pid}", headers=H(pt)).get_json()["total"] == 1
    # the owned profile cannot be deleted by staff; its email cannot be used again
    r = c.delete(f"/fhir/Patient/{pid}", headers=H(t["d1"]))
    assert r.status_code == 403 and "$unlink" in r.get_data(as_text=True)
    r = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"given": ["A"], "family": "L"}],
                                      "telecom": [{"system": "email", "value": "ann@example.org"}],
                                      "managingOrganization": {"reference": "Organization/o2"}}, headers=H(t["d2"]))
    assert r.status_code == 409


def test_temporary_password_must_change_at_first_login(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    pid = _patient(c, t["d1"], "o1", given="Tom", family="Ray", email="tom@example.org")
    assert _invite(c, t["d1"], f"Patient/{pid}", temporary_password=True).status_code == 200
    body = smtp_server.to("tom@example.org")[-1]["body"]
    temp = re.search(r"Temporary password: (\S+)", body).group(1)
    r = login(c, eng, "tom@example.org", temp, PATIENT_SCOPE)
    assert r.status_code == 403 and "temporary" in r.get_data(as_text=True)
    r = c.post("/auth/password", data={"username": "tom@example.org", "password": temp, "new_password": temp})
    assert r.status_code == 400
    r = c.post("/auth/password", data={"username": "tom@example.org", "password": temp, "new_password": "brandnew99"})
    assert r.status_code == 200
    assert login(c, eng, "tom@example.org", "brandnew99", PATIENT_SCOPE)["patient"] == pid


def test_guardian_acts_for_children_until_age_limit(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    mail = "mum@example.org"
    kids = [_patient(c, t["d1"], "o1", given=g, family="Kim", email=mail, birthDate=b)
            for g, b in (("Bo", "2018-05-01"), ("Cy", "2016-01-01"), ("Di", "2001-01-01"))]
    rps = []
    for k in kids:
        r = c.post("/fhir/RelatedPerson", json={
            "resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{k}"}, "name": [{"given": ["Mia"], "family": "Kim"}],
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}],
            "telecom": [{"system": "email", "value": mail}]}, headers=H(t["d1"]))
        assert r.status_code == 201, r.get_data(as_text=True)
        rps.append(r.get_json()["id"])
    for rp in rps:
        assert _invite(c, t["d1"], f"RelatedPerson/{rp}").status_code == 200
    _activate(c, smtp_server, mail)
    g = login(c, eng, mail, "mypassword1", "openid fhirUser patient/*.rs")
    seen = {e["resource"]["id"] for e in c.get("/fhir/Patient", headers=H(g)).get_json().get("entry", [])}
    assert seen == set(kids[:2])  # the adult child is out of the guardian's reach
    assert c.get(f"/fhir/Patient/{kids[2]}", headers=H(g)).status_code == 404


def test_unlink_close_reactivate_and_reserved_email(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    pid = _patient(c, t["d1"], "o1", given="Eve", family="Ng", email="eve@example.org")
    assert c.post(f"/fhir/Patient/{pid}/$unlink", headers=H(t["d2"])).status_code == 404
    assert c.post(f"/fhir/Patient/{pid}/$unlink", headers=H(t["d1"])).status_code == 200
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d1"])).status_code == 404
    new = {"resourceType": "Patient", "name": [{"given": ["Eve"], "family": "Ng"}],
           "telecom": [{"system": "email", "value": "eve@example.org"}],
           "managingOrganization": {"reference": "Organization/o1"}}
    assert c.post("/fhir/Patient", json=new, headers=H(t["d1"])).status_code == 409
    # another organization cannot claim the unlinked profile by reactivating it
    assert c.post(f"/fhir/Patient/{pid}/$reactivate", headers=H(t["d2"])).status_code == 403
    assert c.post(f"/fhir/Patient/{pid}/$reactivate", headers=H(t["d1"])).status_code == 200
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d1"])).get_json()["active"] is True
    # an invited patient closes their account: the login stops, the email stays reserved
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200
    _activate(c, smtp_server, "eve@example.org")
    pt = login(c, eng, "eve@example.org", "mypassword1", PATIENT_SCOPE)
    assert c.post(f"/fhir/Patient/{pid}/$close", headers=H(t["d1"])).status_code == 403
    assert c.post(f"/fhir/Patient/{pid}/$close", headers=H(pt)).status_code == 200
    assert c.get(f"/fhir/Patient/{pid}", headers=H(pt)).status_code == 401
    assert login(c, eng, "eve@example.org", "mypassword1", PATIENT_SCOPE).status_code == 401
    assert c.post("/fhir/Patient", json=new, headers=H(t["d2"])).status_code == 409
    assert c.post(f"/fhir/Patient/{pid}/$reactivate", headers=H(t["d1"])).status_code == 200
    assert login(c, eng, "eve@example.org", "mypassword1", PATIENT_SCOPE)["patient"] == pid


def test_merge_preview_atomic_failure_and_repointing(lapp, smtp_server):  # noqa: ANN001
    from dicom.tables import dicom_study
    from sqlalchemy import insert, select

    c, eng, t = _seed(lapp)
    src = _patient(c, t["d1"], "o1", given="Joe", family="Doe", email=None)
    tgt = _patient(c, t["d1"], "o1", given="Joseph", family="Doe", email="joe@example.org")
    subj = {"reference": f"Patient/{src}"}
    made = []
    for body in ({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "scan"}, "subject": subj},
                 {"resourceType": "ImagingStudy", "status": "available", "subject": subj},
                 {"resourceType": "Appointment", "status": "booked", "participant": [{"actor": subj, "status": "accepted"}]},
                 {"resourceType": "DocumentReference", "status": "current", "subject": subj,
                  "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]},
                 {"resourceType": "Communication", "status": "completed", "subject": subj}):
        r = c.post(f"/fhir/{body['resourceType']}", json=body, headers=H(t["d1"]))
        assert r.status_code == 201, r.get_data(as_text=True)
        made.append(f"{body['resourceType']}/{r.get_json()['id']}")
    with eng.begin() as conn:
        conn.execute(insert(dicom_study).values(study_uid="1.2.3.999", patient_res_id=src, num_series=0, num_instances=0))
    p = params(source_patient={"reference": f"Patient/{src}"}, target_patient={"reference": f"Patient/{tgt}"}, preview=True)
    r = c.post("/fhir/Patient/$merge", json=p, headers=H(t["d1"]))
    assert r.status_code == 200
    moved = {x["valueReference"]["reference"] for x in r.get_json()["parameter"] if x["name"] == "moved"}
    assert moved == set(made)
    assert c.get(f"/fhir/DiagnosticReport?subject=Patient/{src}", headers=H(t["d1"])).get_json()["total"] == 1
    # a failing merge (invalid result patient) changes nothing
    bad = params(source_patient={"reference": f"Patient/{src}"}, target_patient={"reference": f"Patient/{tgt}"},
                 result_patient={"resourceType": "Patient", "id": tgt, "gender": "not-a-gender"})
    r = c.post("/fhir/Patient/$merge", json=bad, headers=H(t["d1"]))
    assert r.status_code in (400, 422) and r.get_json()["resourceType"] == "OperationOutcome"
    assert c.get(f"/fhir/DiagnosticReport?subject=Patient/{src}", headers=H(t["d1"])).get_json()["total"] == 1
    assert c.get(f"/fhir/Patient/{src}", headers=H(t["d1"])).get_json().get("active") is not False
    # another organization cannot merge; the real merge moves everything
    assert c.post("/fhir/Patient/$merge", json=p, headers=H(t["d2"])).status_code == 404
    p = params(source_patient={"reference": f"Patient/{src}"}, target_patient={"reference": f"Patient/{tgt}"})
    r = c.post("/fhir/Patient/$merge", json=p, headers=H(t["d1"]))
    assert r.status_code == 200, r.get_data(as_text=True)
    for ref in made:
        assert c.get(f"/fhir/{ref}", headers=H(t["d1"])).get_json() and \
            f"Patient/{tgt}" in c.get(f"/fhir/{ref}", headers=H(t["d1"])).get_data(as_text=True)
    s = c.get(f"/fhir/Patient/{src}", headers=H(t["d1"])).get_json()
    assert s["active"] is False and s["link"] == [{"other": {"reference": f"Patient/{tgt}"}, "type": "replaced-by"}]
    with eng.connect() as conn:
        assert conn.execute(select(dicom_study.c.patient_res_id).where(dicom_study.c.study_uid == "1.2.3.999")).scalar() == tgt
    assert c.post("/fhir/Patient/$merge", json=p, headers=H(t["d1"])).status_code == 422  # already merged
    audits = c.get(f"/fhir/Patient/{tgt}/$access-log", headers=H(t["d1"])).get_json()
    assert any("merge" in json.dumps(e["resource"]) for e in audits["entry"])


def test_consent_sharing_access_requests_and_access_log(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    pid = _patient(c, t["d1"], "o1", given="Liu", family="Yang", email="liu@example.org")
    subj = {"reference": f"Patient/{pid}"}
    c.post("/fhir/ImagingStudy", json={"resourceType": "ImagingStudy", "status": "available", "subject": subj}, headers=H(t["d1"]))
    c.post("/fhir/DiagnosticReport", json={"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                                           "subject": subj}, headers=H(t["d1"]))
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200
    _activate(c, smtp_server, "liu@example.org")
    pt = login(c, eng, "liu@example.org", "mypassword1", PATIENT_SCOPE)
    # the patient shares imaging only with organization o2
    consent = {"resourceType": "Consent", "status": "active", "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "urn:fhirserver:sharing", "code": "share"}]}], "patient": subj,
               "provision": {"type": "permit", "actor": [{"role": {"text": "recipient"}, "reference": {"reference": "Organization/o2"}}],
                             "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "ImagingStudy"}]}}
    r = c.post("/fhir/Consent", json=consent, headers=H(pt))
    assert r.status_code == 201, r.get_data(as_text=True)
    cid = r.get_json()["id"]
    assert c.get("/fhir/ImagingStudy", headers=H(t["d2"])).get_json()["total"] == 1
    assert c.get("/fhir/DiagnosticReport", headers=H(t["d2"])).get_json()["total"] == 0
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d2"])).status_code == 200
    # revoked: effective at once for the same token
    assert c.delete(f"/fhir/Consent/{cid}", headers=H(pt)).status_code in (200, 204)
    assert c.get("/fhir/ImagingStudy", headers=H(t["d2"])).get_json()["total"] == 0
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d2"])).status_code == 404
    # access request: "ask me each time" -> email, the patient accepts
    smtp_server.messages.clear()
    r = c.post("/fhir/Patient/$request-access", json=params(email="liu@example.org", scope="all"), headers=H(t["d3"]))
    assert pval(r.get_json(), "status") == "pending"
    assert "asks to see" in smtp_server.to("liu@example.org")[-1]["body"]
    reqs = c.post(f"/fhir/Patient/{pid}/$access-requests", headers=H(pt)).get_json()
    rid = reqs["parameter"][0]["part"][0]["valueString"]
    assert c.post(f"/fhir/Patient/{pid}/$respond-access", json=params(request=rid, decision="accept"),
                  headers=H(t["d3"])).status_code in (403, 404)
    r = c.post(f"/fhir/Patient/{pid}/$respond-access", json=params(request=rid, decision="accept"), headers=H(pt))
    assert r.status_code == 200 and pval(r.get_json(), "status") == "accepted"
    assert c.get("/fhir/DiagnosticReport", headers=H(t["d3"])).get_json()["total"] == 1
    # preference: any clinician may see my imaging -> o2's request is granted at once
    pref = {**consent, "category": [{"coding": [{"system": "urn:fhirserver:sharing", "code": "platform-imaging"}]}]}
    pref["provision"] = {"type": "permit", "class": consent["provision"]["class"]}
    assert c.post("/fhir/Consent", json=pref, headers=H(pt)).status_code == 201
    r = c.post("/fhir/Patient/$request-access", json=params(email="liu@example.org"), headers=H(t["d2"]))
    assert pval(r.get_json(), "status") == "granted"
    assert c.get("/fhir/ImagingStudy", headers=H(t["d2"])).get_json()["total"] == 1
    # the access log: who did what
    r = c.get(f"/fhir/Patient/{pid}/$access-log", headers=H(pt))
    assert r.status_code == 200, r.get_data(as_text=True)
    log = r.get_json()
    kinds = {s["code"] for e in log["entry"] for s in e["resource"].get("subtype", [])}
    assert {"invite", "request-access", "respond-access"} <= kinds


def test_tags_and_mdt_meeting(lapp, smtp_server):  # noqa: ANN001
    c, eng, t = _seed(lapp)
    a = _patient(c, t["d1"], "o1", given="A", family="One", email=None, meta={"tag": [{"system": "urn:clinic:tags", "code": "mdt"}]})
    _patient(c, t["d1"], "o1", given="B", family="Two", email=None)
    r = c.get("/fhir/Patient?_tag=urn:clinic:tags|mdt", headers=H(t["d1"])).get_json()
    assert [e["resource"]["id"] for e in r["entry"]] == [a]
    appt = c.post("/fhir/Appointment", json={"resourceType": "Appointment", "status": "booked", "description": "MDT meeting",
                                             "participant": [{"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                                                             {"actor": {"reference": "Practitioner/d2"}, "status": "accepted"}]},
                  headers=H(t["d1"]))
    assert appt.status_code == 201
    lst = c.post("/fhir/List", json={"resourceType": "List", "status": "current", "mode": "working", "title": "MDT patients",
                                     "entry": [{"item": {"reference": f"Patient/{a}"}}],
                                     "extension": [{"url": "urn:fhirserver:meeting", "valueReference": {"reference": f"Appointment/{appt.get_json()['id']}"}}]},
                 headers=H(t["d1"]))
    assert lst.status_code == 201, lst.get_data(as_text=True)


def test_capability_statement_declares_operations(lapp):  # noqa: ANN001
    cs = lapp.test_client().get("/fhir/metadata").get_json()
    pat = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    names = {o["name"] for o in pat.get("operation", [])}
    assert {"invite", "merge", "erase", "unlink", "find-by-email", "access-log"} <= names
    here = os.path.dirname(os.path.abspath(__file__))
    for n in names:
        path = os.path.join(here, "..", "..", "conformance", "definitions", f"OperationDefinition-Patient-{n}.json")
        assert json.load(open(path))["code"] == n


def test_erase_leaves_no_trace(lapp, smtp_server, settings, database_url):  # noqa: ANN001
    from fhirserver.blobs import open_store
    from dicom.tables import dicom_instance, dicom_series, dicom_study
    from sqlalchemy import insert

    c, eng, t = _seed(lapp)
    name, email, ident = "Zebedee", "zeb.quux@example.org", "MRN-77123"
    pid = _patient(c, t["d1"], "o1", given=name, family="Quuxley", email=email,
                   identifier=[{"system": "urn:mrn", "value": ident}])
    subj = {"reference": f"Patient/{pid}", "display": f"{name} Quuxley"}
    r = c.post("/fhir/ImagingStudy", json={"resourceType": "ImagingStudy", "status": "available", "subject": subj}, headers=H(t["d1"]))
    study = r.get_json()["id"]
    rep = c.post("/fhir/DiagnosticReport", json={"resourceType": "DiagnosticReport", "status": "final", "code": {"text": f"{name} scan"},
                                                 "subject": subj}, headers=H(t["d1"])).get_json()
    rep["conclusion"] = f"second version for {name}"
    c.put(f"/fhir/DiagnosticReport/{rep['id']}", json=rep, headers=H(t["d1"]))
    gone = c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": f"{ident} note"},
                                             "subject": subj}, headers=H(t["d1"])).get_json()["id"]
    c.delete(f"/fhir/Observation/{gone}", headers=H(t["d1"]))  # soft-deleted: only history keeps it
    key, size = open_store(settings).put([b"DICM fake instance of " + name.encode() + b" " + ident.encode()])
    with eng.begin() as conn:
        conn.execute(insert(dicom_study).values(study_uid="1.2.840.77", patient_id=ident, patient_name=name,
                                                imaging_study_id=study, patient_res_id=pid, num_series=1, num_instances=1))
        conn.execute(insert(dicom_series).values(study_uid="1.2.840.77", series_uid="1.2.840.77.1"))
        conn.execute(insert(dicom_instance).values(study_uid="1.2.840.77", series_uid="1.2.840.77.1", sop_uid="1.2.840.77.1.1",
                                                   sop_class_uid="1.2", transfer_syntax="1.2.840.10008.1.2.1",
                                                   storage_key=key, size=size, received=__import__("datetime").datetime.now()))
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200
    _activate(c, smtp_server, email)
    pt = login(c, eng, email, "mypassword1", PATIENT_SCOPE)
    assert c.get(f"/fhir/Patient/{pid}", headers=H(pt)).status_code == 200
    # staff may not erase an owned profile; the patient can
    assert c.post(f"/fhir/Patient/{pid}/$erase", headers=H(t["d1"])).status_code == 403
    r = c.post(f"/fhir/Patient/{pid}/$erase", headers=H(pt))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d1"])).status_code == 404
    assert not open_store(settings).exists(key)
    # dump the database and the data folder: no name, email or identifier left
    if database_url.startswith("postgres"):
        dump = subprocess.run(["pg_dump", database_url], capture_output=True, check=True).stdout
    else:
        # Read the raw file bytes in another process: close() on any descriptor of the database
        # file would drop every POSIX lock this process's SQLite connections hold on it
        # (sqlite.org/howtocorrupt.html 2.2) and let another process corrupt the file.
        path = database_url.split("///", 1)[1]
        dump = b"".join(subprocess.run(["cat", p], capture_output=True, check=True).stdout
                        for p in (path, path + "-wal") if os.path.exists(p))
    for root, _dirs, files in os.walk(settings.data_dir):
        for f in files:
            try:
                dump += open(os.path.join(root, f), "rb").read()
            except OSError:
                pass
    for needle in (name, email, ident, "Quuxley"):
        assert needle.encode() not in dump, needle
    log = c.get("/fhir/AuditEvent?_count=200", headers=H(t["d1"])).get_json()
    assert any("erasure" in json.dumps(e["resource"]) for e in log.get("entry", []))


def test_connected_apps_listed_and_revoked(lapp, client):  # noqa: ANN001
    """A patient sees the SMART apps holding access to their data and revokes one at once."""
    from smart_auth import store

    sapp, open_client = lapp, client
    open_client.put("/fhir/Patient/app-p", json={"resourceType": "Patient", "id": "app-p"},
                    headers={"Content-Type": "application/fhir+json"})
    engine = sapp.extensions["fhirserver"].repo.engine
    diary = store.add_client(engine, name="Diary app", redirect_uris=["http://localhost/cb"],
                             scope="patient/*.rs")["client_id"]
    ctx = {"role": "patient", "patient": "app-p", "patients": ["app-p"], "fhirUser": "Patient/app-p"}
    mine, _ = store.save_token(engine, kind="access", grant_id="g-mine", client_id=diary, user_pk=None,
                               scope="patient/*.cruds", context=ctx, lifetime=3600)
    store.save_token(engine, kind="refresh", grant_id="g-mine", client_id=diary, user_pk=None,
                     scope="patient/*.rs offline_access", context=ctx, lifetime=86400)
    c = sapp.test_client()
    h = {"Authorization": f"Bearer {mine}"}
    r = c.get("/fhir/Patient/app-p/$connected-apps", headers=h)
    assert r.status_code == 200, r.data
    apps = {p["name"]: p for p in r.get_json()["parameter"][0]["part"]}
    assert apps["name"]["valueString"] == "Diary app" and apps["offline"]["valueBoolean"] is True
    assert c.get("/fhir/Patient/other/$connected-apps", headers=h).status_code == 404
    assert c.post("/fhir/Patient/app-p/$revoke-app", json={"resourceType": "Parameters"},
                  headers={**h, "Content-Type": "application/fhir+json"}).status_code == 400
    r = c.post("/fhir/Patient/app-p/$revoke-app", json={"resourceType": "Parameters", "parameter": [
        {"name": "client", "valueString": diary}]}, headers={**h, "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.data
    assert c.get("/fhir/Patient/app-p", headers=h).status_code == 401   # that app's token is dead



def test_consent_limited_to_a_date_range_of_data(lapp, smtp_server):  # noqa: ANN001
    """A patient shares with another organization only the data of a period (provision.dataPeriod)."""
    c, eng, t = _seed(lapp)
    pid = _patient(c, t["d1"], "o1", given="Rita", family="Okoro", email="rita@example.org")
    subj = {"reference": f"Patient/{pid}"}
    for day in ("2023-06-01", "2024-02-10", "2024-11-30"):
        r = c.post("/fhir/DiagnosticReport", json={"resourceType": "DiagnosticReport", "status": "final",
                                                   "code": {"text": day}, "subject": subj,
                                                   "effectiveDateTime": day}, headers=H(t["d1"]))
        assert r.status_code == 201
    c.post("/fhir/DiagnosticReport", json={"resourceType": "DiagnosticReport", "status": "final",
                                           "code": {"text": "undated"}, "subject": subj}, headers=H(t["d1"]))
    assert _invite(c, t["d1"], f"Patient/{pid}").status_code == 200
    _activate(c, smtp_server, "rita@example.org")
    pt = login(c, eng, "rita@example.org", "mypassword1", PATIENT_SCOPE)
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "urn:fhirserver:sharing", "code": "share"}]}], "patient": subj,
               "provision": {"type": "permit", "actor": [{"role": {"text": "recipient"},
                                                          "reference": {"reference": "Organization/o2"}}],
                             "dataPeriod": {"start": "2024-01-01", "end": "2024-06-30"}}}
    r = c.post("/fhir/Consent", json=consent, headers=H(pt))
    assert r.status_code == 201, r.get_data(as_text=True)
    seen = c.get("/fhir/DiagnosticReport", headers=H(t["d2"])).get_json()
    assert [e["resource"]["code"]["text"] for e in seen.get("entry", [])] == ["2024-02-10"]
    assert c.get(f"/fhir/Patient/{pid}", headers=H(t["d2"])).status_code == 200
    assert c.get("/fhir/DiagnosticReport", headers=H(t["d1"])).get_json()["total"] == 4  # own clinic: all
