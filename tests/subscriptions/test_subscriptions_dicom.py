"""A scan arriving over DICOMweb STOW-RS or a dcmtk storescu C-STORE notifies the subscribers of
its patient, once the study's ImagingStudy is written."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_helpers import SCU_AE, clean_dicom, node  # noqa: F401 - fixtures
from subs_helpers import JSON, STUDY_TOPIC, focus_refs, status_of, subscription, wait_for

sys.path.insert(0, str(Path(__file__).parents[1] / "dicomweb"))
from dw_helpers import STOW_TYPE, ct_bytes, multipart  # noqa: E402


def _subscribed_patient(client, receiver, pid: str, mrn: str) -> str:  # noqa: ANN001
    r = client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                                  "identifier": [{"system": "urn:mrn", "value": mrn}]}, headers=JSON)
    assert r.status_code in (200, 201)
    body = subscription(STUDY_TOPIC, receiver.url, filters=[f"ImagingStudy?patient=Patient/{pid}"])
    sid = json.loads(client.post("/fhir/Subscription", json=body, headers=JSON).data)["id"]
    wait_for(lambda: json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)["status"] == "active")
    return sid


def _study_of(note: dict) -> dict:
    return next(e["resource"] for e in note["entry"][1:] if e.get("resource", {}).get("resourceType") == "ImagingStudy")


def test_stow_notifies(client, worker, receiver, clean_dicom):  # noqa: ANN001
    _subscribed_patient(client, receiver, "ps", "MRN-STOW")
    other = ct_bytes(patient_id="SOMEONE-ELSE")
    mine = ct_bytes(patient_id="MRN-STOW")
    for part in (other, mine):
        r = client.post("/dicomweb/studies", data=multipart([part]), headers={"Content-Type": STOW_TYPE})
        assert r.status_code == 200, r.get_data(as_text=True)
    note = wait_for(receiver.events)[0]
    assert _study_of(note)["subject"]["reference"] == "Patient/ps"
    assert len(receiver.events()) == 1  # the other patient's scan told nobody
    assert "/ImagingStudy/" in focus_refs(note)[0]


def test_storescu_notifies(client, worker, receiver, node, tmp_path):  # noqa: ANN001
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed (make test installs it: apt-get install -y dcmtk)")
    sid = _subscribed_patient(client, receiver, "pd", "MRN-DIMSE")
    files = []
    for i in range(3):
        path = tmp_path / f"ct{i}.dcm"
        path.write_bytes(ct_bytes(patient_id="MRN-DIMSE", study_uid="1.2.826.0.1.3680043.8.498.4242", number=i + 1))
        files.append(str(path))
    proc = subprocess.run(["storescu", "-aet", SCU_AE, "-aec", "FHIRSERVER", "127.0.0.1",
                           str(node.settings.dicom_port), *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    note = wait_for(receiver.events)[0]
    assert _study_of(note)["subject"]["reference"] == "Patient/pd"
    assert status_of(note)["parameter"][0]["valueReference"]["reference"].endswith(f"/Subscription/{sid}")
