"""QIDO-RS writes DICOM JSON straight from the index: every result must be the object the
library writes for the same identifier (pydicom's `to_json_dict` of `query.response_for`), at
every level and with every return key, including empty values, lists and odd names."""
from __future__ import annotations

from dw_helpers import STOW_TYPE, ct_bytes, multipart
from pydicom.uid import generate_uid

from dicom import query as cfind
from dicom.web import qido
from fhirserver.access import OpenPolicy

DW = "/dicomweb"
CT = STOW_TYPE


def _library_json(item: dict, q, url: str) -> dict:  # noqa: ANN001
    ds = cfind.response_for(item, q)
    if "QueryRetrieveLevel" in ds:
        del ds.QueryRetrieveLevel
    ds.RetrieveURL = url
    return ds.to_json_dict()


def test_direct_json_equals_the_library_json_at_every_level(dw, app):  # noqa: ANN001
    study, series = generate_uid(), generate_uid()
    parts = [ct_bytes(patient_id="PJ1", patient_name="Doe^Jane", study_uid=study, series_uid=series, number=1,
                      accession="ACC9"),
             ct_bytes(patient_id="PJ1", patient_name="Doe^Jane", study_uid=study, series_uid=series, number=2,
                      accession="ACC9"),
             ct_bytes(patient_id="PJ2", patient_name="", study_uid=generate_uid(), number=1, modality="MR")]
    assert dw.post(f"{DW}/studies", data=multipart(parts), headers={"Content-Type": CT}).status_code == 200
    compared = 0
    for level, path, fixed in (("STUDY", "/studies?includefield=all", {}),
                               ("STUDY", "/studies?PatientID=PJ1", {}),
                               ("SERIES", "/series?includefield=all", {}),
                               ("IMAGE", f"/studies/{study}/instances?includefield=all", {"StudyInstanceUID": study}),
                               ("IMAGE", "/instances", {})):
        with app.test_request_context(DW + path):
            q, _fuzzy = qido.build_query(level, fixed)
            template = qido._json_template(q)  # noqa: SLF001
            assert template is not None
            with app.extensions["fhirserver"].repo.engine.connect() as conn:
                items = list(cfind.candidates(conn, level, q, policy=OpenPolicy()))
            assert items
            for it in items:
                url = f"http://x/dicomweb/studies/{it['StudyInstanceUID']}"
                assert qido.dicom_json(it, template, url) == _library_json(it, q, url), (level, path)
                compared += 1
    assert compared >= 8
    # and through HTTP the answer is what the library would have written
    got = dw.get(f"{DW}/studies?PatientID=PJ1&includefield=all").get_json()
    assert len(got) == 1 and got[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert got[0]["00201208"] == {"vr": "IS", "Value": [2]}


def test_names_with_ideographic_groups_take_the_library_way():
    template = [("00100010", "PN", "PatientName", None)]
    assert qido.dicom_json({"PatientName": "Yamada^Tarou=山田^太郎"}, template, "u") is None
    assert qido.dicom_json({"PatientName": "Yamada^Tarou"}, template, "u") == {
        "00081190": {"vr": "UR", "Value": ["u"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou"}]}}
