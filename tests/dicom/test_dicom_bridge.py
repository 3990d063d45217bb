"""ImagingStudy bridge and patient matching, over real C-STOREs from dcmtk."""
from __future__ import annotations

import threading

from sqlalchemy import select

from dicom.bridge import UNRECONCILED
from dicom.tables import dicom_study
from dicom_synth import make_ct, make_series
from fhirserver.model.jsonio import loads
from fhirserver.model.validate import validate_resource


def _all(repo, res_type):  # noqa: ANN001, ANN202
    with repo.transaction() as tx:
        rows, *_ = tx.search(res_type, [], count=100, with_total=False)
        return [loads(r.body) for r in rows]


def test_study_becomes_imaging_study_on_new_patient(dcmtk, node, tmp_path):  # noqa: ANN001
    study_uid, series_uid, paths = make_series(tmp_path / "a", 3, patient_id="PX-1",
                                               patient_name="Müller^Jürgen", accession="ACC1")
    dcmtk.run("storescu", files=paths)  # answered after the bridge ran: no waiting needed
    studies = _all(node.repo, "ImagingStudy")
    assert len(studies) == 1
    im = studies[0]
    validate_resource(im)
    assert {"system": "urn:dicom:uid", "value": "urn:oid:" + study_uid, "use": "official"} in im["identifier"]
    assert any(i.get("value") == "ACC1" for i in im["identifier"])
    assert im["numberOfSeries"] == 1 and im["numberOfInstances"] == 3
    assert im["series"][0]["uid"] == series_uid
    assert [i["number"] for i in im["series"][0]["instance"]] == [1, 2, 3]
    assert im["modality"][0]["code"] == "CT"
    assert im["started"].startswith("2024-01-15T10:15:00")
    assert im["referrer"]["display"] == "Smith Anna"
    assert im["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    patients = _all(node.repo, "Patient")
    assert len(patients) == 1
    p = patients[0]
    assert im["subject"] == {"reference": f"Patient/{p['id']}"}
    assert p["meta"]["tag"][0]["code"] == UNRECONCILED["code"]
    assert p["identifier"][0]["value"] == "PX-1"
    assert p["name"][0]["family"] == "Müller" and p["gender"] == "female"
    assert p["birthDate"] == "1980-02-03"
    endpoint = _all(node.repo, "Endpoint")[0]
    assert endpoint["address"].endswith("/dicomweb")
    # a second series of the same study updates the same ImagingStudy (version 2)
    make_series(tmp_path / "b", 2, patient_id="PX-1", study_uid=study_uid, series_number=2)
    dcmtk.run("storescu", "+sd", files=[tmp_path / "b"])
    studies = _all(node.repo, "ImagingStudy")
    assert len(studies) == 1 and studies[0]["meta"]["versionId"] == "2"
    assert studies[0]["numberOfSeries"] == 2 and studies[0]["numberOfInstances"] == 5
    assert len(_all(node.repo, "Patient")) == 1


def test_matches_existing_patient_by_identifier(dcmtk, node, tmp_path):  # noqa: ANN001
    with node.repo.transaction(write=True) as tx:
        pid = tx.create("Patient", {"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:1.2.3.4", "value": "MRN-77"}], "name": [{"family": "Real"}]}).res_id
    paths = [make_ct(tmp_path / "x.dcm", patient_id="MRN-77", issuer="1.2.3.4")]
    dcmtk.run("storescu", files=paths)
    im = _all(node.repo, "ImagingStudy")[0]
    assert im["subject"]["reference"] == f"Patient/{pid}"
    assert len(_all(node.repo, "Patient")) == 1


def test_accession_links_service_request_and_completes_appointment(dcmtk, node, tmp_path):  # noqa: ANN001
    with node.repo.transaction(write=True) as tx:
        pat = tx.create("Patient", {"resourceType": "Patient", "identifier": [
            {"system": "urn:mrn", "value": "W-1"}]}).res_id
        sr = tx.create("ServiceRequest", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "ACSN"}]}, "value": "SCAN-42"}],
            "subject": {"reference": f"Patient/{pat}"}}).res_id
        appt = tx.create("Appointment", {
            "resourceType": "Appointment", "status": "booked", "basedOn": [{"reference": f"ServiceRequest/{sr}"}],
            "participant": [{"actor": {"reference": f"Patient/{pat}"}, "status": "accepted"}]}).res_id
    dcmtk.run("storescu", files=[make_ct(tmp_path / "y.dcm", patient_id="W-1", accession="SCAN-42")])
    im = _all(node.repo, "ImagingStudy")[0]
    assert im["basedOn"] == [{"reference": f"ServiceRequest/{sr}"}]
    assert im["subject"]["reference"] == f"Patient/{pat}"
    with node.repo.transaction() as tx:
        assert loads(tx.current("Appointment", appt).body)["status"] == "fulfilled"


def test_concurrent_associations_make_one_imaging_study(dcmtk, node, tmp_path):  # noqa: ANN001
    """Two modalities send parts of the same study at once: one ImagingStudy, one Patient."""
    study_uid = "1.2.826.0.1.3680043.8.498.4242"
    folders = []
    for k in range(4):
        make_series(tmp_path / f"m{k}", 4, patient_id="CONC", study_uid=study_uid, series_number=k + 1)
        folders.append(tmp_path / f"m{k}")
    errors: list[Exception] = []

    def send(folder):  # noqa: ANN001, ANN202
        try:
            dcmtk.run("storescu", "+sd", files=[folder])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    studies = _all(node.repo, "ImagingStudy")
    assert len(studies) == 1
    assert studies[0]["numberOfSeries"] == 4 and studies[0]["numberOfInstances"] == 16
    assert len(_all(node.repo, "Patient")) == 1
    with node.engine.connect() as c:
        row = c.execute(select(dicom_study)).one()
    assert row.imaging_study_id == studies[0]["id"]
