"""C-FIND (patient and study root, every level, PS3.4 C.2.2 matching), C-MOVE and C-GET with dcmtk,
and the modality worklist with `findscu -W`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import SCU_AE, free_port, wait_for
from dicom.nodes import add_node
from dicom_synth import make_ct, make_series


@pytest.fixture()
def loaded(dcmtk, tmp_path):  # noqa: ANN001, ANN201
    """Two patients: DOE (two studies, CT and a 2-series CT+MR study), ROE (one study)."""
    a = make_series(tmp_path / "a", 3, patient_id="P-DOE", patient_name="Doe^John",
                    accession="A1", study_date="20240110", study_time="083000")
    b = make_series(tmp_path / "b", 2, patient_id="P-DOE", patient_name="Doe^John",
                    accession="A2", study_date="20240301", study_time="141500")
    make_series(tmp_path / "b2", 1, patient_id="P-DOE", patient_name="Doe^John", accession="A2",
                study_uid=b[0], modality="MR", series_number=2, study_date="20240301")
    c = make_series(tmp_path / "c", 1, patient_id="P-ROE", patient_name="Roe^Jane",
                    accession="A3", study_date="20240520")
    dcmtk.run("storescu", "+sd", "+r", files=[tmp_path / "a", tmp_path / "b", tmp_path / "b2",
                                              tmp_path / "c"])
    return {"a": a, "b": b, "c": c}


def find(dcmtk, tmp_path: Path, model: str, *keys: str) -> list:  # noqa: ANN001
    out = tmp_path / f"rsp{len(list(tmp_path.glob('rsp*')))}"
    out.mkdir()
    args = [model, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    dcmtk.run("findscu", *args)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_find_patient_root_levels(dcmtk, loaded, tmp_path):  # noqa: ANN001
    pats = find(dcmtk, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=DOE*",
                "PatientID", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")
    assert len(pats) == 1
    assert pats[0].PatientID == "P-DOE" and str(pats[0].PatientName) == "Doe^John"
    assert pats[0].NumberOfPatientRelatedStudies == 2
    assert pats[0].NumberOfPatientRelatedInstances == 6
    # universal matching at PATIENT level: both patients
    assert len(find(dcmtk, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID")) == 2
    studies = find(dcmtk, tmp_path, "-P", "QueryRetrieveLevel=STUDY", "PatientID=P-DOE",
                   "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
    assert {s.StudyInstanceUID for s in studies} == {loaded["a"][0], loaded["b"][0]}
    two = [s for s in studies if s.StudyInstanceUID == loaded["b"][0]][0]
    assert set(two.ModalitiesInStudy) == {"CT", "MR"}
    assert two.NumberOfStudyRelatedInstances == 3
    series = find(dcmtk, tmp_path, "-P", "QueryRetrieveLevel=SERIES", "PatientID=P-DOE",
                  f"StudyInstanceUID={loaded['b'][0]}", "SeriesInstanceUID", "Modality=MR",
                  "NumberOfSeriesRelatedInstances")
    assert len(series) == 1 and series[0].Modality == "MR"
    images = find(dcmtk, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", "PatientID=P-DOE",
                  f"StudyInstanceUID={loaded['a'][0]}", f"SeriesInstanceUID={loaded['a'][1]}",
                  "SOPInstanceUID", "InstanceNumber=2", "SOPClassUID")
    assert len(images) == 1 and images[0].InstanceNumber == 2
    assert images[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_find_study_root_matching_rules(dcmtk, loaded, tmp_path):  # noqa: ANN001
    def uids(*keys: str) -> set[str]:
        return {r.StudyInstanceUID for r in find(dcmtk, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                                                 "StudyInstanceUID", *keys)}

    a, b, c = loaded["a"][0], loaded["b"][0], loaded["c"][0]
    assert uids() == {a, b, c}                                   # universal
    assert uids("StudyDate=20240101-20240401") == {a, b}         # range
    assert uids("StudyDate=20240301-") == {b, c}                 # open range
    assert uids("StudyDate=-20240110") == {a}
    assert uids("StudyTime=0800-0900") == {a}
    assert uids("AccessionNumber=A3") == {c}                     # single value
    assert uids("PatientName=*oe^J*") == {a, b, c}               # wildcard
    assert uids("PatientName=R?E^JANE") == {c}
    assert uids("ModalitiesInStudy=MR") == {b}                   # multi-valued attribute
    assert uids(f"StudyInstanceUID={a}\\{c}") == {a, c}          # UID list
    rsp = find(dcmtk, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=A1",
               "StudyDescription", "PatientBirthDate", "StudyInstanceUID")
    assert rsp[0].StudyDescription == "CBCT jaw" and rsp[0].PatientBirthDate == "19800203"
    # PATIENT level is not part of the Study Root model: a failure, not a crash
    proc = dcmtk.run("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", check=False)
    assert "datasetdoesnotmatchsopclass" in (proc.stdout + proc.stderr).lower()


@pytest.mark.slow
def test_move_into_storescp_and_get(dcmtk, node, loaded, tmp_path):  # noqa: ANN001
    port = free_port()
    dest = tmp_path / "moved"
    dest.mkdir()
    add_node(node.engine, "DESTSCP", "127.0.0.1", port)
    scp = subprocess.Popen(["storescp", "-aet", "DESTSCP", "-od", str(dest), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: subprocess.run(["echoscu", "-aec", "DESTSCP", "127.0.0.1", str(port)],
                                        capture_output=True).returncode == 0)
        dcmtk.run("movescu", "-S", "-aem", "DESTSCP", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={loaded['b'][0]}")
        files = wait_for(lambda: sorted(dest.iterdir()) if len(list(dest.iterdir())) == 3 else None)
        assert {dcmread(f).StudyInstanceUID for f in files} == {loaded["b"][0]}
        # patient root, series level
        dcmtk.run("movescu", "-P", "-aem", "DESTSCP", "-k", "QueryRetrieveLevel=SERIES",
                  "-k", "PatientID=P-ROE", "-k", f"StudyInstanceUID={loaded['c'][0]}",
                  "-k", f"SeriesInstanceUID={loaded['c'][1]}")
        wait_for(lambda: len(list(dest.iterdir())) == 4)
        # unknown destination: refused with 0xA801
        proc = dcmtk.run("movescu", "-v", "-S", "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={loaded['c'][0]}", check=False)
        assert "movedestinationunknown" in (proc.stdout + proc.stderr).lower()
    finally:
        scp.terminate()
        scp.wait(10)
    got = tmp_path / "got"
    got.mkdir()
    dcmtk.run("getscu", "-S", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={loaded['a'][0]}")
    files = sorted(got.iterdir())
    assert len(files) == 3
    originals = {dcmread(p).SOPInstanceUID: dcmread(p) for p in (tmp_path / "a").iterdir()}
    for f in files:
        ds = dcmread(f)
        assert ds.PixelData == originals[ds.SOPInstanceUID].PixelData


def test_worklist_from_service_request(dcmtk, node, repo, tmp_path):  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        pat = tx.create("Patient", {"resourceType": "Patient", "identifier": [
            {"system": "urn:mrn", "value": "WL-1"}], "name": [{"family": "Ticket", "given": ["Tom"]}],
            "gender": "male", "birthDate": "1990-04-05"}).res_id
        sr = tx.create("ServiceRequest", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "ACSN"}]}, "value": "TICKET-9"}],
            "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "IO",
                                 "display": "Intra-oral Radiography"}], "text": "Intraoral scan"},
            "subject": {"reference": f"Patient/{pat}"}}).res_id
        tx.create("Appointment", {
            "resourceType": "Appointment", "status": "booked", "start": "2024-06-01T09:30:00+00:00",
            "end": "2024-06-01T10:00:00+00:00", "basedOn": [{"reference": f"ServiceRequest/{sr}"}],
            "participant": [{"actor": {"reference": f"Patient/{pat}"}, "status": "accepted"},
                            {"actor": {"identifier": {"system": "urn:dicom:ae", "value": "SCANNER1"},
                                       "display": "Scanner 1"}, "status": "accepted"}]})
        # a cancelled order is not on the worklist
        tx.create("ServiceRequest", {"resourceType": "ServiceRequest", "status": "revoked",
                                     "intent": "order", "subject": {"reference": f"Patient/{pat}"}})
    sps = ("ScheduledProcedureStepSequence[0].Modality",
           "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=SCANNER1",
           "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
           "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime")
    items = find(dcmtk, tmp_path, "-W", "PatientName", "PatientID", "PatientSex", "PatientBirthDate",
                 "AccessionNumber", "RequestedProcedureDescription", "StudyInstanceUID", *sps)
    assert len(items) == 1
    item = items[0]
    assert item.AccessionNumber == "TICKET-9" and item.PatientID == "WL-1"
    assert str(item.PatientName) == "Ticket^Tom" and item.PatientSex == "M"
    assert item.RequestedProcedureDescription == "Intraoral scan"
    step = item.ScheduledProcedureStepSequence[0]
    assert step.Modality == "IO" and step.ScheduledStationAETitle == "SCANNER1"
    assert len(step.ScheduledProcedureStepStartDate) == 8
    # other station: nothing
    other = find(dcmtk, tmp_path, "-W", "PatientID",
                 "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=OTHER")
    assert other == []
    # the scan arrives with the ticket's accession: linked, appointment fulfilled, off the list
    dcmtk.run("storescu", files=[make_ct(tmp_path / "scan.dcm", patient_id="WL-1",
                                         accession="TICKET-9", study_uid=item.StudyInstanceUID)])
    assert find(dcmtk, tmp_path, "-W", "AccessionNumber=TICKET-9") == []


def test_modality_of_an_organization_sees_only_its_studies(dcmtk, node, tmp_path):  # noqa: ANN001
    """A modality registered for a clinic queries and retrieves that clinic's patients' studies only."""
    with node.repo.transaction(write=True) as tx:
        for org in ("clinic-a", "clinic-b"):
            tx.update("Organization", org, {"resourceType": "Organization", "id": org, "name": org})
        for pid, org in (("P-A", "clinic-a"), ("P-B", "clinic-b")):
            tx.create("Patient", {"resourceType": "Patient", "identifier": [{"value": pid}],
                                  "managingOrganization": {"reference": f"Organization/{org}"}})
    mine = make_series(tmp_path / "a", 1, patient_id="P-A", patient_name="A^A", accession="X1")
    other = make_series(tmp_path / "b", 1, patient_id="P-B", patient_name="B^B", accession="X2")
    dcmtk.run("storescu", "+sd", "+r", files=[tmp_path / "a", tmp_path / "b"])
    add_node(node.engine, "CLINICA", "127.0.0.1", 104, organization="clinic-a")
    node.ae.forget_registry()  # the registry is cached for 2 s: make the new node known now

    def studies(aet: str) -> set[str]:
        out = tmp_path / f"rsp-{aet}-{len(list(tmp_path.glob('rsp-*')))}"
        out.mkdir()
        dcmtk.run("findscu", "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                  "-k", "StudyInstanceUID", aet=aet)
        return {dcmread(p).StudyInstanceUID for p in out.glob("rsp*.dcm")}

    assert studies(SCU_AE) == {mine[0], other[0]}       # a site-wide node (no organization) sees all
    assert studies("CLINICA") == {mine[0]}           # clinic A's scanner sees clinic A's study only
    out = tmp_path / "pats"
    out.mkdir()
    dcmtk.run("findscu", "-P", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID",
              aet="CLINICA")
    assert {dcmread(p).PatientID for p in out.glob("rsp*.dcm")} == {"P-A"}
