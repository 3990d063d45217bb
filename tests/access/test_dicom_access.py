"""The DICOM entry points ask the one access gate, as a modality of one clinic would meet it.

Two clinics (org-a, org-b), each with a registered modality (SCANA, SCANB), and a site-wide
node (SITE, registered without an organization). Both clinics use the PatientID "MRN-1", for
different people: every answer must come from the caller's own clinic. Real dcmtk tools talk to
a running SCP; DICOMweb goes through the auth-on app with an organization-bound backend token.
Each refusal is preceded by the same request succeeding for the caller's own data.
"""
from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import delete, select, text

from dicom.nodes import add_node
from dicom.scp import DicomNode
from dicom.tables import DICOM_TABLES, dicom_instance
from dicom_helpers import ct_dataset, save_part10
from live_helpers import free_port
from smart_auth import store as auth_store

SERVER_AE = "FHIRSERVER"
UNRECONCILED = "unreconciled"


# -- helpers -------------------------------------------------------------------------------------
def _ct(*, patient_id: str, patient_name: str, study_uid: str | None = None, series_uid: str | None = None,
        number: int = 1, accession: str = "") -> Dataset:
    """A small CT slice with real pixel data."""
    return ct_dataset(patient_id=patient_id, patient_name=patient_name, study_uid=study_uid,
                      series_uid=series_uid, number=number, accession=accession, size=16)


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_part10(ds, path)
    return path


class Clinics:
    """The running SCP, its repository, and dcmtk runs as one of the registered nodes."""

    def __init__(self, node: DicomNode, tmp: Path, ports: dict[str, int]) -> None:
        self.node, self.tmp, self.ports = node, tmp, ports
        self._n = 0

    def run(self, tool: str, *args: str, aet: str, check: bool = True,
            files: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        if shutil.which(tool) is None:
            pytest.fail(f"dcmtk ({tool}) is not installed")
        cmd = [tool, "-aet", aet, "-aec", SERVER_AE, *args, "127.0.0.1", str(self.node.settings.dicom_port), *files]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def fresh_dir(self, name: str) -> Path:
        self._n += 1
        out = self.tmp / f"{name}-{self._n}"
        out.mkdir()
        return out

    def store(self, aet: str, *datasets: Dataset, check: bool = True,
              verbose: bool = False) -> subprocess.CompletedProcess:
        folder = self.fresh_dir("send")
        files = tuple(str(_write(ds, folder / f"{i}.dcm")) for i, ds in enumerate(datasets))
        return self.run("storescu", *(["-v"] if verbose else []), aet=aet, check=check, files=files)

    def find(self, aet: str, *keys: str, model: str = "-S") -> list[Dataset]:
        out = self.fresh_dir("find")
        args = [model, "-X", "-od", str(out)]
        for k in keys:
            args += ["-k", k]
        self.run("findscu", *args, aet=aet)
        return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def move(self, aet: str, study_uid: str, dest: str | None = None) -> list[Dataset]:
        """C-MOVE a study to a registered node (default: the calling node itself); movescu
        receives on the destination's registered port."""
        dest = dest or aet
        out = self.fresh_dir("moved")
        self.run("movescu", "-S", "-aem", dest, "--port", str(self.ports[dest]), "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", aet=aet)
        return [dcmread(p) for p in sorted(out.iterdir())]

    def get(self, aet: str, study_uid: str) -> list[Dataset]:
        out = self.fresh_dir("got")
        self.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study_uid}", aet=aet)
        return [dcmread(p) for p in sorted(out.iterdir())]

    # FHIR side, read directly from the repository (what the bridge made)
    def imaging_study(self, study_uid: str) -> dict[str, Any] | None:
        with self.node.repo.transaction() as tx:
            for row in tx.search("ImagingStudy", [], count=1000, with_total=False)[0]:
                body = _json(row.body)
                if any(i.get("value") == "urn:oid:" + study_uid for i in body.get("identifier") or []):
                    return body
        return None

    def resource(self, res_type: str, res_id: str) -> dict[str, Any]:
        with self.node.repo.transaction() as tx:
            cur = tx.current(res_type, res_id)
            assert cur is not None and not cur.deleted
            return _json(cur.body)

    def audit_events(self) -> list[dict[str, Any]]:
        self.node.audit.flush()
        with self.node.repo.transaction() as tx:
            rows = tx.search("AuditEvent", [], count=1000, with_total=False)[0]
            return [_json(r.body) for r in rows]


def _json(body: Any) -> dict[str, Any]:
    from fhirserver.model.jsonio import loads

    return loads(body)


def _subject(ims: dict[str, Any] | None) -> str:
    assert ims is not None, "no ImagingStudy was made"
    return ims["subject"]["reference"]


@pytest.fixture()
def clinics(settings, repo, tmp_path):  # noqa: ANN001, ANN201
    """Organizations org-a and org-b, each with a patient "MRN-1" (different people) and org-b's
    "MRN-2"; the nodes SCANA (org-a), SCANB (org-b) and SITE (site-wide); the SCP running."""
    with repo.engine.begin() as conn:
        for table in reversed(DICOM_TABLES):
            conn.execute(delete(table))
    with repo.transaction(write=True) as tx:
        for org in ("org-a", "org-b"):
            tx.update("Organization", org, {"resourceType": "Organization", "id": org, "name": org})
        for pid, org, mrn, family in (("pa", "org-a", "MRN-1", "Alpha"), ("pb", "org-b", "MRN-1", "Bravo"),
                                      ("pb2", "org-b", "MRN-2", "Bravotwo")):
            tx.update("Patient", pid, {"resourceType": "Patient", "id": pid, "identifier": [{"value": mrn}],
                                       "name": [{"family": family, "given": ["Pat"]}],
                                       "managingOrganization": {"reference": f"Organization/{org}"}})
    ports = {"SCANA": free_port(), "SCANB": free_port(), "SITE": free_port()}
    add_node(repo.engine, "SCANA", "127.0.0.1", ports["SCANA"], organization="org-a")
    add_node(repo.engine, "SCANB", "127.0.0.1", ports["SCANB"], organization="org-b")
    add_node(repo.engine, "SITE", "127.0.0.1", ports["SITE"])
    s = settings.replace(dicom_port=free_port(), data_dir=tmp_path / "var", dicom_ae=SERVER_AE)
    node = DicomNode(s, repo=repo)
    node.start()
    yield Clinics(node, tmp_path, ports)
    node.stop()
    node.audit.flush()


def _send_studies(c: Clinics) -> dict[str, tuple[str, str]]:
    """Each clinic's modality sends a study of its "MRN-1" patient: (study UID, series UID)."""
    out = {}
    for aet, name in (("SCANA", "Alpha^Pat"), ("SCANB", "Bravo^Pat")):
        study, series = generate_uid(), generate_uid()
        c.store(aet, *[_ct(patient_id="MRN-1", patient_name=name, study_uid=study, series_uid=series, number=i + 1)
                       for i in range(2)])
        out[aet] = (study, series)
    return out


# -- C-STORE: patient matching ------------------------------------------------------------------
def test_cstore_matches_only_the_senders_organizations_patients(clinics):  # noqa: ANN001
    c = clinics
    studies = _send_studies(c)
    # own data first: each clinic's scan lands on its own MRN-1 patient
    assert _subject(c.imaging_study(studies["SCANA"][0])) == "Patient/pa"
    assert _subject(c.imaging_study(studies["SCANB"][0])) == "Patient/pb"
    # org-a's modality sends a scan with org-b's MRN-2: not attached to org-b's patient; it waits
    # in org-a's reconciliation list, as an unreconciled Patient of org-a
    study = generate_uid()
    c.store("SCANA", _ct(patient_id="MRN-2", patient_name="Bravotwo^Pat", study_uid=study))
    subject = _subject(c.imaging_study(study))
    assert subject != "Patient/pb2"
    made = c.resource("Patient", subject.split("/", 1)[1])
    assert any(t.get("code") == UNRECONCILED for t in made["meta"].get("tag", []))
    assert made["managingOrganization"] == {"reference": "Organization/org-a"}
    # the next scan of that PatientID from org-a goes to the same waiting Patient
    again = generate_uid()
    c.store("SCANA", _ct(patient_id="MRN-2", patient_name="Bravotwo^Pat", study_uid=again))
    assert _subject(c.imaging_study(again)) == subject
    # the site-wide node (no organization) matches as before: org-b's MRN-2 patient
    site = generate_uid()
    c.store("SITE", _ct(patient_id="MRN-2", patient_name="Bravotwo^Pat", study_uid=site))
    assert _subject(c.imaging_study(site)) == "Patient/pb2"
    # but it never guesses between two clinics' MRN-1 people: the study waits for reconciliation
    shared = generate_uid()
    c.store("SITE", _ct(patient_id="MRN-1", patient_name="Who^Pat", study_uid=shared))
    subject = _subject(c.imaging_study(shared))
    assert subject not in ("Patient/pa", "Patient/pb")
    made = c.resource("Patient", subject.split("/", 1)[1])
    assert any(t.get("code") == UNRECONCILED for t in made["meta"].get("tag", []))
    assert "managingOrganization" not in made


def test_cstore_into_another_organizations_study_is_refused(clinics):  # noqa: ANN001
    c = clinics
    studies = _send_studies(c)
    a_study, b_study = studies["SCANA"][0], studies["SCANB"][0]
    # adding an instance to its own study works
    c.store("SCANA", _ct(patient_id="MRN-1", patient_name="Alpha^Pat", study_uid=a_study, number=7))
    # adding one to org-b's study is refused (0x0124) and nothing is indexed
    sneaky = _ct(patient_id="MRN-1", patient_name="Alpha^Pat", study_uid=b_study, number=8)
    proc = c.store("SCANA", sneaky, check=False, verbose=True)
    assert proc.returncode != 0 and "status: 0x124" in (proc.stdout + proc.stderr).lower()  # not authorized
    with c.node.engine.connect() as conn:
        counts = dict(conn.execute(select(dicom_instance.c.study_uid, text("count(*)"))
                                   .group_by(dicom_instance.c.study_uid)).all())
        assert not conn.execute(select(dicom_instance.c.sop_uid).where(
            dicom_instance.c.sop_uid == str(sneaky.SOPInstanceUID))).first()
    assert counts[a_study] == 3 and counts[b_study] == 2
    assert _subject(c.imaging_study(b_study)) == "Patient/pb"


# -- C-FIND at every level ---------------------------------------------------------------------
def test_cfind_every_level_returns_only_the_nodes_organization(clinics):  # noqa: ANN001
    c = clinics
    studies = _send_studies(c)
    a_study, a_series = studies["SCANA"]
    b_study, b_series = studies["SCANB"]
    # STUDY level: own study, never the other clinic's
    found = c.find("SCANA", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName")
    assert {d.StudyInstanceUID for d in found} == {a_study}
    assert c.find("SCANA", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={b_study}") == []
    assert {d.StudyInstanceUID for d in c.find("SCANB", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")} \
        == {b_study}
    # PATIENT level: the shared PatientID shows org-a's person, counting org-a's studies only
    pats = c.find("SCANA", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-1", "PatientName",
                  "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances", model="-P")
    assert len(pats) == 1
    assert str(pats[0].PatientName) == "Alpha^Pat"
    assert int(pats[0].NumberOfPatientRelatedStudies) == 1 and int(pats[0].NumberOfPatientRelatedInstances) == 2
    # SERIES level
    series = c.find("SCANA", "QueryRetrieveLevel=SERIES", "StudyInstanceUID", "SeriesInstanceUID")
    assert {d.SeriesInstanceUID for d in series} == {a_series}
    assert c.find("SCANA", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={b_study}", "SeriesInstanceUID") == []
    # IMAGE level
    images = c.find("SCANA", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={a_study}",
                    f"SeriesInstanceUID={a_series}", "SOPInstanceUID")
    assert len(images) == 2
    assert c.find("SCANA", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={b_study}",
                  f"SeriesInstanceUID={b_series}", "SOPInstanceUID") == []
    # the site-wide node sees both clinics, as it is configured to
    assert {d.StudyInstanceUID for d in c.find("SITE", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")} \
        == {a_study, b_study}


# -- C-MOVE and C-GET --------------------------------------------------------------------------
def test_cmove_and_cget_retrieve_only_visible_studies(clinics):  # noqa: ANN001
    c = clinics
    studies = _send_studies(c)
    a_study, b_study = studies["SCANA"][0], studies["SCANB"][0]
    moved = c.move("SCANA", a_study)
    assert len(moved) == 2 and {d.StudyInstanceUID for d in moved} == {a_study}
    assert c.move("SCANA", b_study) == []
    # a destination is a node too: org-a's study goes to a site-wide node, never to org-b's
    assert len(c.move("SCANA", a_study, dest="SITE")) == 2
    assert c.move("SCANA", a_study, dest="SCANB") == []
    got = c.get("SCANA", a_study)
    assert len(got) == 2 and {d.StudyInstanceUID for d in got} == {a_study}
    assert c.get("SCANA", b_study) == []
    assert len(c.get("SCANB", b_study)) == 2


# -- Modality Worklist -------------------------------------------------------------------------
def test_worklist_lists_only_the_nodes_organizations_orders(clinics):  # noqa: ANN001
    c = clinics
    with c.node.repo.transaction(write=True) as tx:
        for sr_id, pid, acc in (("sr-a", "pa", "ACC-A"), ("sr-b", "pb", "ACC-B")):
            tx.update("ServiceRequest", sr_id, {
                "resourceType": "ServiceRequest", "id": sr_id, "status": "active", "intent": "order",
                "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                     "code": "ACSN"}]}, "value": acc}],
                "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
                         "text": "CBCT"},
                "subject": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": "2030-01-01T09:00:00Z"})
    keys = ("AccessionNumber", "PatientName", "PatientID", "ScheduledProcedureStepSequence[0].Modality")
    mine = c.find("SCANA", *keys, model="-W")
    assert [(d.AccessionNumber, str(d.PatientName)) for d in mine] == [("ACC-A", "Alpha^Pat")]
    assert c.find("SCANA", "AccessionNumber=ACC-B", "PatientName", model="-W") == []
    assert [d.AccessionNumber for d in c.find("SCANB", *keys, model="-W")] == ["ACC-B"]
    assert sorted(d.AccessionNumber for d in c.find("SITE", *keys, model="-W")) == ["ACC-A", "ACC-B"]
    # the worklist query is audited, naming the order and the patient it disclosed
    events = [e for e in c.audit_events() if _dimse(e) and _client(e) == "dicom:SCANA"
              and "MWL" in _detail(e)]
    assert events
    named = {en["what"].get("reference") for e in events for en in e["entity"]}
    assert {"ServiceRequest/sr-a", "Patient/pa"} <= named
    assert not {"ServiceRequest/sr-b", "Patient/pb"} & named


# -- AuditEvents -------------------------------------------------------------------------------
def _dimse(event: dict[str, Any]) -> bool:
    return any(s.get("code") == "dimse" for s in event.get("subtype") or [])


def _client(event: dict[str, Any]) -> str | None:
    return event["agent"][0]["who"].get("identifier", {}).get("value")


def _detail(event: dict[str, Any]) -> str:
    return " ".join(en.get("description", "") + " " + en.get("what", {}).get("display", "")
                    for en in event.get("entity") or [])


def test_every_dimse_service_writes_an_audit_event(clinics):  # noqa: ANN001
    c = clinics
    studies = _send_studies(c)
    a_study = studies["SCANA"][0]
    c.find("SCANA", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    c.move("SCANA", a_study)
    c.get("SCANA", a_study)
    c.find("SCANA", "AccessionNumber", model="-W")
    events = [e for e in c.audit_events() if _dimse(e) and _client(e) == "dicom:SCANA"]
    by_code = {}
    for e in events:
        by_code.setdefault(e["type"]["code"], []).append(e)
    assert set(by_code) == {"110107", "110112", "110106"}   # import, query, export
    store = by_code["110107"][0]
    assert store["action"] == "C" and "C-STORE" in _detail(store)
    assert any(en["what"].get("reference") == "Patient/pa" for en in store["entity"])
    queries = {_detail(e).split(":")[0].strip() for e in by_code["110112"]}
    assert any("C-FIND STUDY" in q for q in queries) and any("C-FIND MWL" in q for q in queries)
    retrieves = " ".join(_detail(e) for e in by_code["110106"])
    assert "C-MOVE to SCANA" in retrieves and "C-GET" in retrieves
    # the events of org-a's node never name org-b's patient or study
    named = {en["what"].get("reference") for e in events for en in e["entity"]}
    assert "Patient/pb" not in named
    assert all(en.get("what", {}).get("identifier", {}).get("value") != "urn:oid:" + studies["SCANB"][0]
               for e in events for en in e["entity"])
    # one writer: the DICOMweb and REST trail's table, the same AuditEvent resources
    assert all(e["resourceType"] == "AuditEvent" and e["agent"][0]["network"]["address"] for e in events)


# -- STOW-RS as an organization-bound backend client -------------------------------------------
BOUNDARY = "dicom-access-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _multipart(*datasets: Dataset) -> bytes:
    out = BytesIO()
    for ds in datasets:
        buf = BytesIO()
        save_part10(ds, buf)
        out.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        out.write(buf.getvalue())
        out.write(b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def test_stow_as_organization_backend_client_matches_only_its_patients(clinics, gate_app):  # noqa: ANN001
    c, secure_app = clinics, gate_app  # gate_app: the auth-on app (tests/access/conftest.py)
    engine = secure_app.extensions["fhirserver"].repo.engine
    tok, _pk = auth_store.save_token(engine, kind="access", grant_id=generate_uid(), client_id="lab-a",
                                     user_pk=None, scope="system/*.cruds",
                                     context={"role": "system", "organizations": ["org-a"]}, lifetime=3600)
    http = secure_app.test_client()
    h = {"Authorization": f"Bearer {tok}", "Content-Type": STOW_TYPE}
    # own patient: attached
    own = generate_uid()
    r = http.post("/dicomweb/studies", data=_multipart(_ct(patient_id="MRN-1", patient_name="Alpha^Pat",
                                                             study_uid=own)), headers=h)
    assert r.status_code == 200, r.data
    assert _subject(c.imaging_study(own)) == "Patient/pa"
    # org-b's MRN-2: stored, but never attached to org-b's patient; unreconciled, org-a's
    other = generate_uid()
    r = http.post("/dicomweb/studies", data=_multipart(_ct(patient_id="MRN-2", patient_name="Bravotwo^Pat",
                                                             study_uid=other)), headers=h)
    assert r.status_code == 200, r.data
    subject = _subject(c.imaging_study(other))
    assert subject != "Patient/pb2"
    made = c.resource("Patient", subject.split("/", 1)[1])
    assert any(t.get("code") == UNRECONCILED for t in made["meta"].get("tag", []))
    assert made["managingOrganization"] == {"reference": "Organization/org-a"}
    # and the backend client finds its own studies (both), not org-b's
    b_study = generate_uid()
    c.store("SCANB", _ct(patient_id="MRN-2", patient_name="Bravotwo^Pat", study_uid=b_study))
    assert _subject(c.imaging_study(b_study)) == "Patient/pb2"
    found = http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {tok}"}).get_json()
    seen = {f["0020000D"]["Value"][0] for f in found}
    assert seen == {own, other}
    secure_app.extensions["fhirserver"].audit.flush()


# -- the gate on its own -------------------------------------------------------------------------
def test_node_principals_and_study_visibility(clinics):  # noqa: ANN001
    """`fhirserver.access.visible_studies` through `dicom.access.node_policy`: a clinic's node sees
    its clinic's studies, a site-wide node all, an AE missing from the registry (the node refuses
    such callers) nothing, and a study whose ImagingStudy was deleted is gone for the clinic."""
    from dicom.access import node_policy, visible_studies

    c = clinics
    studies = _send_studies(c)
    both = {studies["SCANA"][0], studies["SCANB"][0]}
    repo, settings = c.node.repo, c.node.settings

    def seen(ae: str, **changes: Any) -> set[str]:
        pol = node_policy(repo, settings.replace(**changes) if changes else settings, ae)
        with repo.engine.connect() as conn:
            return visible_studies(conn, pol, both)

    assert seen("SCANA") == {studies["SCANA"][0]}
    assert seen("SCANB") == {studies["SCANB"][0]}
    assert seen("SITE") == both
    assert seen("NOBODY") == set()                                   # not registered: fails closed
    assert seen("NOBODY", dicom_reject_unknown=False) == both        # --accept-unknown: site-wide
    ims = c.imaging_study(studies["SCANA"][0])
    with repo.transaction(write=True) as tx:
        tx.delete("ImagingStudy", ims["id"])
    assert seen("SCANA") == set()
    assert c.find("SCANA", "QueryRetrieveLevel=STUDY", "StudyInstanceUID") == []
