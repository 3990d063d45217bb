"""Scan tickets, merge and unmatched studies against a real DICOM node driven by dcmtk
(storescu, findscu), as staff of two organizations."""
from __future__ import annotations

import re

import pytest

from console_dicom import ct, start_node, wait_for
from console_helpers import post, put, read, search_all


@pytest.fixture()
def scanners(capp, tmp_path):  # noqa: ANN001, ANN201
    node, sc = start_node(capp, tmp_path)
    yield sc
    node.stop()


def _study(capp, uid: str):  # noqa: ANN001, ANN202
    return next((s for s in search_all(capp, "ImagingStudy")
                 if any(i.get("value") == "urn:oid:" + uid for i in s.get("identifier") or [])), None)


def _dicom_patient(capp, uid: str) -> str | None:  # noqa: ANN001
    from sqlalchemy import select

    from dicom.tables import dicom_study

    with capp.extensions["fhirserver"].repo.engine.connect() as conn:
        return conn.execute(select(dicom_study.c.patient_res_id).where(dicom_study.c.study_uid == uid)).scalar()


def _ticket(moreno, pid: str, **extra: str) -> str:  # noqa: ANN001
    r = post(moreno, f"/console/patients/{pid}/tickets/new", {"scan": "cbct", "case": "implant", "visit": "first",
                                                              "doctor": "demo-dr", **extra})
    assert r.status_code == 303, r.text[:1000]
    page = moreno.get(r.headers["Location"]).text
    return re.search(r"\((ST[0-9A-F]+)\)", page).group(1)


def test_scan_ticket_is_served_by_the_worklist_and_completed_by_the_study(capp, moreno, harbor, scanners):  # noqa: ANN001
    form = moreno.get("/console/patients/demo-ana/tickets/new").text
    for label in ("Intraoral", "Face scan", "CBCT", "X-ray", "Case type", "Visit type", "Doctor"):
        assert label in form
    r = post(moreno, "/console/patients/demo-ana/tickets/new", {"scan": "", "case": "implant"})
    assert r.status_code == 400 and "Choose a scan type." in r.text
    acc = _ticket(moreno, "demo-ana")
    sr = next(s for s in search_all(capp, "ServiceRequest") if s["identifier"][0]["value"] == acc)
    assert sr["status"] == "active" and sr["code"]["coding"][0]["code"] == "CT"
    assert sr["subject"]["reference"] == "Patient/demo-ana"
    # the clinic's modality gets the ticket; Harbor's does not
    items = scanners.worklist("CLINIC")
    assert acc in [d.AccessionNumber for d in items]
    assert acc not in [d.AccessionNumber for d in scanners.worklist("HARBOR")]
    # the case type now filters the list
    assert "Ana Torres" in moreno.get("/console/patients?case=implant").text
    assert "Bob Stone" not in moreno.get("/console/patients?case=implant").text
    # Harbor's staff cannot create a ticket for the clinic's patient
    assert post(harbor, "/console/patients/demo-ana/tickets/new", {"scan": "cbct"}).status_code == 404
    item = next(d for d in items if d.AccessionNumber == acc)
    uid = "1.2.826.0.1.3680043.8.498." + str(abs(hash(acc)) % 10**12)
    scanners.store("CLINIC", ct(patient_id=str(item.PatientID), patient_name=str(item.PatientName),
                                study_uid=uid, accession=acc))
    study = wait_for(lambda: _study(capp, uid))
    assert study["subject"]["reference"] == "Patient/demo-ana"
    wait_for(lambda: read(capp, "ServiceRequest", sr["id"])["status"] == "completed")
    assert acc not in [d.AccessionNumber for d in scanners.worklist("CLINIC")]
    page = moreno.get("/console/patients/demo-ana").text
    assert f"/viewer/?study={uid}&amp;dicomweb=/console/dicomweb" in page or \
        f"/viewer/?study={uid}&dicomweb=/console/dicomweb" in page
    # the viewer reads the study through the console with this staff member's own policy
    series = moreno.get(f"/console/dicomweb/studies/{uid}/series")
    assert series.status_code == 200 and series.get_json()
    r = harbor.get(f"/console/dicomweb/studies/{uid}/series")  # another organization's staff
    assert r.status_code == 404 or (r.status_code in (200, 204) and not (r.data and r.get_json()))
    assert moreno.get("/console/dicomweb/studies").status_code == 404  # no study-less search


def test_merge_preview_confirm_and_later_scans_land_on_the_target(capp, moreno, harbor, scanners):  # noqa: ANN001
    # a scan for an unknown PatientID makes a waiting (unreconciled) patient of the clinic
    scanners.store("CLINIC", ct(patient_id="DUP-77", patient_name="Torres^Ana", study_uid="1.2.3.77.1"))
    first = wait_for(lambda: _study(capp, "1.2.3.77.1"))
    dup = first["subject"]["reference"].split("/")[1]
    assert dup != "demo-ana"
    assert read(capp, "Patient", dup)["managingOrganization"]["reference"] == "Organization/demo-clinic"
    page = moreno.get("/console/patients/demo-ana/merge").text
    assert f'value="{dup}"' in page  # found as similar (same family name)
    assert harbor.get("/console/patients/demo-ana/merge").status_code == 404
    r = post(moreno, "/console/patients/demo-ana/merge/preview", {})
    assert r.status_code == 400 and "Choose at least one patient" in r.text
    r = post(moreno, "/console/patients/demo-ana/merge/preview", {"source": dup})
    assert r.status_code == 200 and f"ImagingStudy/{first['id']}" in r.text
    digest = re.search(r'name="digest" value="([^"]+)"', r.text).group(1)
    assert read(capp, "Patient", dup).get("active") is not False  # a preview changes nothing
    # Harbor's staff cannot merge the clinic's patients (neither can they preview)
    assert post(harbor, "/console/patients/demo-ana/merge/confirm", {"source": dup, "digest": digest}).status_code == 404
    # a stale preview is refused
    r = post(moreno, "/console/patients/demo-ana/merge/confirm", {"source": dup, "digest": "0" * 32})
    assert r.status_code == 409 and read(capp, "Patient", dup).get("active") is not False
    r = post(moreno, "/console/patients/demo-ana/merge/confirm", {"source": dup, "digest": digest})
    assert r.status_code == 303
    assert read(capp, "Patient", dup)["active"] is False
    assert _study(capp, "1.2.3.77.1")["subject"]["reference"] == "Patient/demo-ana"
    assert _dicom_patient(capp, "1.2.3.77.1") == "demo-ana"
    # the next scan with the merged PatientID lands on the target
    scanners.store("CLINIC", ct(patient_id="DUP-77", patient_name="Torres^Ana", study_uid="1.2.3.77.2"))
    assert wait_for(lambda: _study(capp, "1.2.3.77.2"))["subject"]["reference"] == "Patient/demo-ana"
    assert _dicom_patient(capp, "1.2.3.77.2") == "demo-ana"


def test_unmatched_studies_listed_for_the_senders_organization_and_attached(capp, moreno, harbor, scanners):  # noqa: ANN001
    scanners.store("CLINIC", ct(patient_id="UNK-1", patient_name="Nadie^Luis", study_uid="1.2.3.88.1"))
    scanners.store("HARBOR", ct(patient_id="UNK-2", patient_name="Otro^Raul", study_uid="1.2.3.88.2"))
    s1 = wait_for(lambda: _study(capp, "1.2.3.88.1"))
    s2 = wait_for(lambda: _study(capp, "1.2.3.88.2"))
    mine = moreno.get("/console/unmatched").text
    assert "UNK-1" in mine and "UNK-2" not in mine
    theirs = harbor.get("/console/unmatched").text
    assert "UNK-2" in theirs and "UNK-1" not in theirs
    assert harbor.get(f"/console/unmatched/{s1['id']}").status_code == 404
    assert post(harbor, f"/console/unmatched/{s1['id']}", {"patient": "harbor-eva"}).status_code == 404
    r = moreno.get(f"/console/unmatched/{s1['id']}?q=Stone")
    assert 'value="demo-bob"' in r.text
    r = post(moreno, f"/console/unmatched/{s1['id']}", {"patient": "demo-bob"})
    assert r.status_code == 303
    assert _study(capp, "1.2.3.88.1")["subject"]["reference"] == "Patient/demo-bob"
    assert _dicom_patient(capp, "1.2.3.88.1") == "demo-bob"
    assert "UNK-1" not in moreno.get("/console/unmatched").text
    # Harbor makes its unmatched study's patient a real one
    r = post(harbor, f"/console/unmatched/{s2['id']}/new-patient", {"first": "Raul", "last": "Otro"})
    assert r.status_code == 303
    pid = s2["subject"]["reference"].split("/")[1]
    p = read(capp, "Patient", pid)
    assert p["name"][0]["family"] == "Otro" and "unreconciled" not in str(p.get("meta"))
    assert "Raul Otro" in harbor.get("/console/patients?q=Otro").text
    assert "Raul Otro" not in moreno.get("/console/patients?q=Otro").text
