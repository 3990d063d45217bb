"""The whole user story with a real DICOMweb client (`dicomweb-client`) against `fhirserver serve`:
upload a study, find it with QIDO, download it with WADO-RS, open its thumbnail."""
from __future__ import annotations

import time
from io import BytesIO

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dw_helpers import ct_bytes


@pytest.mark.slow
def test_dicomweb_client_stow_qido_wado_thumbnail(live_server, dw):  # dw: empty tables
    url = live_server.base[:-len("/fhir")] + "/dicomweb"
    client = DICOMwebClient(url=url)
    study, series = generate_uid(), generate_uid()
    datasets = [dcmread(BytesIO(ct_bytes(study_uid=study, series_uid=series, number=i + 1, size=128,
                                         patient_id="DWC-1", patient_name="Client^Carla")))
                for i in range(4)]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in result
    # (dicomweb-client sends "Host: 127.0.0.1" without the port: the server adds the one it listens on)
    assert result.RetrieveURL == f"{url}/studies/{study}"

    found = client.search_for_studies(search_filters={"PatientID": "DWC-1"})
    assert [f["0020000D"]["Value"][0] for f in found] == [study]
    found = client.search_for_studies(search_filters={"PatientName": "client*"}, fields=["StudyDescription"])
    assert found[0]["00081030"]["Value"] == ["CBCT jaw"]
    assert len(client.search_for_series(study_instance_uid=study)) == 1
    insts = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert sorted(i["00200013"]["Value"][0] for i in insts) == [1, 2, 3, 4]
    assert len(client.search_for_instances(study_instance_uid=study, limit=2, offset=2)) == 2

    got = client.retrieve_study(study)
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(str(d.SOPInstanceUID) for d in datasets)
    sop = str(datasets[0].SOPInstanceUID)
    inst = client.retrieve_instance(study, series, sop)
    assert inst.PixelData == datasets[0].PixelData
    assert len(client.retrieve_series(study, series)) == 4
    meta = client.retrieve_instance_metadata(study, series, sop)
    assert meta["00080018"]["Value"] == [sop] and "BulkDataURI" in meta["7FE00010"]
    assert len(client.retrieve_series_metadata(study, series)) == 4
    pixels = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert pixels[0] == datasets[0].PixelData
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert frames[0] == datasets[0].PixelData
    png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",),
                                            params={"window": "40,400", "viewport": "64,64"})
    assert Image.open(BytesIO(png)).size == (64, 64)
    # the thumbnail, as a browser would open it
    r = requests.get(f"{url}/studies/{study}/thumbnail", headers={"Accept": "text/html,*/*;q=0.8"}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert Image.open(BytesIO(r.content)).format == "JPEG"

    # a compressed instance (JPEG 2000): stored as sent, rendered through the decoder plugins
    j2k = dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    j2k.SOPInstanceUID = j2k.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    j2k.StudyInstanceUID, j2k.SeriesInstanceUID = generate_uid(), generate_uid()
    client.store_instances([j2k])
    back = client.retrieve_instance(str(j2k.StudyInstanceUID), str(j2k.SeriesInstanceUID),
                                    str(j2k.SOPInstanceUID), media_types=(("application/dicom", "*"),))
    assert back.file_meta.TransferSyntaxUID == j2k.file_meta.TransferSyntaxUID
    jpg = client.retrieve_instance_rendered(str(j2k.StudyInstanceUID), str(j2k.SeriesInstanceUID),
                                            str(j2k.SOPInstanceUID), media_types=("image/jpeg",),
                                            params={"quality": "80"})
    assert Image.open(BytesIO(jpg)).format == "JPEG"
    # ImagingStudy.endpoint points at this DICOMweb service
    r = requests.get(live_server.base + "/Endpoint/dicomweb", timeout=10)
    assert r.status_code == 200, r.text  # made by the ImagingStudy bridge of the first STOW
    assert r.json()["address"] == url
    time.sleep(0.5)  # the server writes its AuditEvents in batches: let them land before the next test
