"""The DICOM node reports to operators: counters in /metrics and one JSON log line per association
(calling AE, instances stored and failed), for accepted and rejected callers alike."""
from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dicom_helpers import start_node
from fhirserver.metrics import exposition
from tests.dicom.conftest import wait_for
from tests.dicom.dicom_synth import make_ct


@pytest.fixture()
def node(settings, clean_dicom, tmp_path):  # noqa: ANN001, ANN201
    """The DICOM tests' node, with the per-association log switched on (as `serve` has it)."""
    n = start_node(settings, clean_dicom, tmp_path, log_requests=True)
    yield n
    n.stop()


def _value(name: str, **labels: str) -> float:
    text = exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _association_lines(caplog) -> list[dict]:  # noqa: ANN001
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "fhirserver.dicom.association"]


def test_store_counted_and_logged(dcmtk, tmp_path, caplog):  # noqa: ANN001
    stored0 = _value("fhirserver_dicom_instances_total", status="stored")
    released0 = _value("fhirserver_dicom_associations_total", result="released")
    files = [make_ct(tmp_path / f"ct{i}.dcm", patient_id="TELE1") for i in range(2)]
    with caplog.at_level(logging.INFO, logger="fhirserver.dicom.association"):
        dcmtk.run("storescu", files=[str(f) for f in files])
        lines = wait_for(lambda: _association_lines(caplog))
    assert _value("fhirserver_dicom_instances_total", status="stored") == stored0 + 2
    assert _value("fhirserver_dicom_associations_total", result="released") == released0 + 1
    line = lines[-1]
    assert line["calling_ae"] == "TESTSCU" and line["stored"] == 2 and line["failed"] == 0
    assert line["result"] == "released"


def test_rejected_caller_counted_and_logged(dcmtk, caplog):  # noqa: ANN001
    rejected0 = _value("fhirserver_dicom_associations_total", result="rejected")
    with caplog.at_level(logging.INFO, logger="fhirserver.dicom.association"):
        proc = dcmtk.run("echoscu", aet="STRANGER", check=False)
        assert proc.returncode != 0
        lines = wait_for(lambda: _association_lines(caplog))
    assert _value("fhirserver_dicom_associations_total", result="rejected") == rejected0 + 1
    assert lines[-1]["calling_ae"] == "STRANGER" and lines[-1]["result"] == "rejected"


def test_rejected_caller_line_says_why(dcmtk, caplog):  # noqa: ANN001
    with caplog.at_level(logging.INFO, logger="fhirserver.dicom.association"):
        dcmtk.run("echoscu", aet="STRANGER2", check=False)
        lines = wait_for(lambda: [x for x in _association_lines(caplog) if x["calling_ae"] == "STRANGER2"])
    assert lines[-1]["result"] == "rejected"
    assert "not registered" in lines[-1]["reason"]


def test_refused_instance_logged_with_its_reason(dcmtk, tmp_path, caplog):  # noqa: ANN001
    import pydicom

    good = make_ct(tmp_path / "good.dcm", patient_id="TELE2")
    bad = make_ct(tmp_path / "bad.dcm", patient_id="TELE2", number=2)
    ds = pydicom.dcmread(bad)
    del ds.StudyInstanceUID  # not indexable: the node refuses it
    ds.save_as(bad)
    with caplog.at_level(logging.INFO, logger="fhirserver.dicom.association"):
        dcmtk.run("storescu", files=[str(good), str(bad)], check=False)
        lines = wait_for(lambda: _association_lines(caplog))
    line = lines[-1]
    assert line["calling_ae"] == "TESTSCU" and line["stored"] == 1 and line["failed"] == 1
    assert len(line["association_id"]) == 32  # also the request id of the association's AuditEvents
    (refused,) = line["refused"]
    assert refused["count"] == 1 and refused["status"].startswith("0x") and refused["reason"]
