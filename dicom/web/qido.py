"""QIDO-RS (PS3.18 10.6): the query parameters become a C-FIND identifier, matched by the same
code as C-FIND (dicom.query), filtered by the caller's access, answered as DICOM JSON."""
from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dicom import query as cfind
from dicom.web.common import DICOM_JSON, audit, base_url, check, error, services
from dicom.web.multipart import parse_accept

MAX_RESULTS = 1000

STUDY_DEFAULTS = ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
                  "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances")
SERIES_DEFAULTS = ("Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
                   "NumberOfSeriesRelatedInstances", "BodyPartExamined", "SeriesDate", "SeriesTime")
INSTANCE_DEFAULTS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                     "NumberOfFrames")
EXTRA_STUDY = ("IssuerOfPatientID", "SOPClassesInStudy")
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "access_token"}


def _keyword(key: str) -> str:
    """A query key (keyword or 8-digit hex tag) as a dictionary keyword; 400 otherwise."""
    k = key.strip()
    if "." in k:
        raise error(400, f"Sequence matching ('{key}') is not supported")
    if len(k) == 8 and all(c in "0123456789abcdefABCDEF" for c in k):
        kw = keyword_for_tag(int(k, 16))
        if not kw:
            raise error(400, f"Unknown attribute tag {key}")
        return kw
    if tag_for_keyword(k) is None:
        raise error(400, f"Unknown query parameter or attribute '{key}'")
    return k


def _vr(kw: str) -> str:
    tag = tag_for_keyword(kw)
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "LO"


def _int_param(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(400, f"{name} must be a non-negative integer, not '{raw}'") from None
    if value < 0:
        raise error(400, f"{name} must be a non-negative integer, not '{raw}'")
    return value


def _accept_json() -> None:
    for m in parse_accept(request.headers.get("Accept")):
        if m.mime in ("application/dicom+json", "application/json", "*/*", "application/*"):
            return
    raise error(406, "QIDO-RS answers application/dicom+json only (application/dicom+xml is not supported)")


def build_query(level: str, fixed: dict[str, str]) -> tuple[Dataset, bool]:
    """The C-FIND identifier for the request's parameters at `level` (STUDY/SERIES/IMAGE)."""
    fuzzy = (request.args.get("fuzzymatching") or "").strip().lower() == "true"
    q = Dataset()
    matches: dict[str, list[str]] = {}
    for key, value in request.args.items(multi=True):
        if key in _CONTROL:
            continue
        kw = _keyword(key)
        matches.setdefault(kw, []).append(value)
    for kw, uid in fixed.items():
        matches[kw] = [uid]
    returns: list[str] = list(STUDY_DEFAULTS)
    if level in ("SERIES", "IMAGE"):
        returns += SERIES_DEFAULTS
    if level == "IMAGE":
        returns += INSTANCE_DEFAULTS
    for raw in request.args.getlist("includefield"):
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "all":
                returns += list(cfind.PATIENT_ATTRS) + list(cfind.STUDY_ATTRS) + list(EXTRA_STUDY)
                if level in ("SERIES", "IMAGE"):
                    returns += list(cfind.SERIES_ATTRS)
                if level == "IMAGE":
                    returns += list(cfind.INSTANCE_ATTRS)
            else:
                returns.append(_keyword(item))
    for kw in dict.fromkeys(returns):
        if kw not in matches:
            q.add_new(tag_for_keyword(kw), _vr(kw), None)
    for kw, values in matches.items():
        vr = _vr(kw)
        if vr == "SQ":
            raise error(400, f"Sequence matching on {kw} is not supported")
        text = "\\".join(values)
        if vr == "UI":
            text = "\\".join(v.strip() for v in text.replace(",", "\\").split("\\") if v.strip())
        if vr == "PN" and fuzzy and text and not any(c in text for c in "*?"):
            text = "*" + text + "*"  # fuzzy: any name containing the text, any case
        try:
            q.add_new(tag_for_keyword(kw), vr, text.split("\\") if "\\" in text and vr in ("UI", "CS") else text)
        except Exception as exc:  # noqa: BLE001
            raise error(400, f"Invalid value for {kw}: {exc}") from None
    q.QueryRetrieveLevel = level
    return q, fuzzy


def _sort_key(level: str, item: dict[str, Any]) -> tuple:
    if level == "STUDY":
        return (item.get("StudyDate") or "", item.get("StudyTime") or "", item.get("StudyInstanceUID"))
    if level == "SERIES":
        return (item.get("StudyInstanceUID"), item.get("SeriesNumber") or 0, item.get("SeriesInstanceUID"))
    return (item.get("StudyInstanceUID"), item.get("SeriesInstanceUID"), item.get("InstanceNumber") or 0,
            item.get("SOPInstanceUID"))


def search(level: str, fixed: dict[str, str]) -> Response:
    pol = check("search")
    _accept_json()
    limit = _int_param("limit", None)
    offset = _int_param("offset", 0) or 0
    q, _fuzzy = build_query(level, fixed)
    repo = services().repo
    with repo.engine.connect() as conn:
        try:
            items = [it for it in cfind.candidates(conn, level, q, policy=pol) if cfind.match_dataset(it, q)]
        except cfind.QueryError as exc:
            raise error(400, str(exc)) from None
    if fixed.get("StudyInstanceUID") and not items and level != "STUDY":
        with repo.engine.connect() as conn:
            if not any(True for _ in cfind.candidates(conn, "STUDY", _study_only(fixed["StudyInstanceUID"]),
                                                      policy=pol)):
                raise error(404, f"No study with that UID ({fixed['StudyInstanceUID']})")
    items.sort(key=lambda it: _sort_key(level, it), reverse=(level == "STUDY"))
    total = len(items)
    cap = MAX_RESULTS if limit is None else min(limit, MAX_RESULTS)
    page = items[offset:offset + cap]
    base = base_url()
    out = []
    for it in page:
        ds = cfind.response_for(it, q)
        if "QueryRetrieveLevel" in ds:
            del ds.QueryRetrieveLevel
        url = f"{base}/studies/{it['StudyInstanceUID']}"
        if level in ("SERIES", "IMAGE"):
            url += f"/series/{it['SeriesInstanceUID']}"
        if level == "IMAGE":
            url += f"/instances/{it['SOPInstanceUID']}"
        ds.RetrieveURL = url
        out.append(ds.to_json_dict())
    audit("query", {it["StudyInstanceUID"] for it in page},
          f"QIDO-RS {level.lower()} query {request.query_string.decode(errors='replace')[:500]}: {len(page)} results")
    resp = Response(orjson.dumps(out), status=200, content_type=DICOM_JSON)
    warnings = []
    if _fuzzy:
        warnings.append('299 fhirserver: "fuzzymatching applies to person names only '
                        '(case-insensitive substring match)"')
    remaining = total - offset - len(page)
    if remaining > 0:
        warnings.append(f'299 fhirserver: "There are {remaining} additional results that can be requested"')
    if warnings:
        resp.headers["Warning"] = ", ".join(warnings)
    return resp


def _study_only(uid: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = uid
    ds.QueryRetrieveLevel = "STUDY"
    return ds
