"""QIDO-RS (PS3.18 10.6): the query parameters become a C-FIND identifier, matched by the same
code as C-FIND (dicom.query), filtered by the caller's access, answered as DICOM JSON."""
from __future__ import annotations

import functools
from typing import Any

import orjson
from flask import Response, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dicom import query as cfind
from dicom.web.common import DICOM_JSON, audit_request, check, error, principal, services
from fhirserver.model import parse_count
from fhirserver.storage import reading
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


@functools.lru_cache(maxsize=1024)
def _vr(kw: str) -> str:
    """The dictionary VR of a keyword (a memo of the dictionary: a pure function)."""
    tag = tag_for_keyword(kw)
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "LO"


@functools.lru_cache(maxsize=1024)
def _tag(kw: str) -> int:
    return tag_for_keyword(kw)


def _int_param(name: str, default: int | None, args: Any = None) -> int | None:
    raw = (request.args if args is None else args).get(name)
    if raw in (None, ""):
        return default
    value = parse_count(raw)  # ASCII digits within 64 bits: the database's range
    if value is None:
        raise error(400, f"{name} must be a non-negative integer, not '{raw}'")
    return value


def _accept_json(accept: Any = False) -> None:
    for m in parse_accept(request.headers.get("Accept") if accept is False else accept):
        if m.mime in ("application/dicom+json", "application/json", "*/*", "application/*"):
            return
    raise error(406, "QIDO-RS answers application/dicom+json only (application/dicom+xml is not supported)")


def build_query(level: str, fixed: dict[str, str]) -> tuple[Dataset, bool]:
    """The C-FIND identifier for the request's parameters at `level` (STUDY/SERIES/IMAGE)."""
    q, fuzzy, _elems = _build_query(level, fixed)
    return q, fuzzy


def _build_query(level: str, fixed: dict[str, str],
                 args: Any = None) -> tuple[Dataset, bool, list[tuple[int, str, str, bool]]]:
    """`build_query`, and the (tag, VR, keyword, is a matching key) of every element it added
    (so the answer's template and the matching keys need not walk the Dataset again)."""
    elems: list[tuple[int, str, str, bool]] = []
    args = request.args if args is None else args
    fuzzy = (args.get("fuzzymatching") or "").strip().lower() == "true"
    q = Dataset()
    matches: dict[str, list[str]] = {}
    for key, value in args.items(multi=True):
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
    for raw in args.getlist("includefield"):
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
            tag, vr = _tag(kw), _vr(kw)
            q.add_new(tag, vr, None)
            elems.append((tag, vr, kw, False))
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
            q.add_new(_tag(kw), vr, text.split("\\") if "\\" in text and vr in ("UI", "CS") else text)
        except Exception as exc:  # noqa: BLE001
            raise error(400, f"Invalid value for {kw}: {exc}") from None
        elems.append((_tag(kw), vr, kw, True))
    q.QueryRetrieveLevel = level
    return q, fuzzy, elems


def _sort_key(level: str, item: dict[str, Any]) -> tuple:
    if level == "STUDY":
        return (item.get("StudyDate") or "", item.get("StudyTime") or "", item.get("StudyInstanceUID"))
    if level == "SERIES":
        return (item.get("StudyInstanceUID"), item.get("SeriesNumber") or 0, item.get("SeriesInstanceUID"))
    return (item.get("StudyInstanceUID"), item.get("SeriesInstanceUID"), item.get("InstanceNumber") or 0,
            item.get("SOPInstanceUID"))


def search(level: str, fixed: dict[str, str]) -> Response:
    pol = check("search")
    body, headers = answer(level, fixed, request, services(), pol, principal())
    resp = Response(body, status=200, content_type=DICOM_JSON)
    for name, value in headers:
        resp.headers[name] = value
    return resp


def answer(level: str, fixed: dict[str, str], req: Any, svc: Any, pol: Any,
           who: Any) -> tuple[bytes, list[tuple[str, str]]]:
    """The QIDO-RS answer (DICOM JSON, and a Warning header when there is one) to `req` (a
    werkzeug request: Flask's, or the lean path's) by caller `who` under policy `pol`, which
    may search ImagingStudy; queues its AuditEvent. Errors are raised (FhirError), before
    anything is audited."""
    _accept_json(req.headers.get("Accept"))
    args = req.args
    limit = _int_param("limit", None, args)
    offset = _int_param("offset", 0, args) or 0
    q, _fuzzy, elems = _build_query(level, fixed, args)
    # the matching keys' values as the Dataset holds them (converted by pydicom), taken once
    keys = cfind.matching_keys((kw, vr, q[tag].value if match and kw != "QueryRetrieveLevel" else None)
                               for tag, vr, kw, match in elems)
    repo = svc.repo
    with reading(repo.engine) as conn:
        try:
            items = [it for it in cfind.candidates(conn, level, q, policy=pol)
                     if (cfind.match_keys(it, keys) if keys is not None else cfind.match_dataset(it, q))]
        except cfind.QueryError as exc:
            raise error(400, str(exc)) from None
    if fixed.get("StudyInstanceUID") and not items and level != "STUDY":
        with reading(repo.engine) as conn:
            if not any(True for _ in cfind.candidates(conn, "STUDY", _study_only(fixed["StudyInstanceUID"]),
                                                      policy=pol)):
                raise error(404, f"No study with that UID ({fixed['StudyInstanceUID']})")
    items.sort(key=lambda it: _sort_key(level, it), reverse=(level == "STUDY"))
    total = len(items)
    cap = MAX_RESULTS if limit is None else min(limit, MAX_RESULTS)
    page = items[offset:offset + cap]
    base = svc.root_url() + "/dicomweb"
    out = []
    template = _json_template_of(q, elems)
    for it in page:
        url = f"{base}/studies/{it['StudyInstanceUID']}"
        if level in ("SERIES", "IMAGE"):
            url += f"/series/{it['SeriesInstanceUID']}"
        if level == "IMAGE":
            url += f"/instances/{it['SOPInstanceUID']}"
        fast = dicom_json(it, template, url) if template is not None else None
        if fast is not None:
            out.append(fast)
            continue
        ds = cfind.response_for(it, q)
        if "QueryRetrieveLevel" in ds:
            del ds.QueryRetrieveLevel
        ds.RetrieveURL = url
        out.append(ds.to_json_dict())
    audit_request(svc, req, who, "query", {it["StudyInstanceUID"] for it in page},
                  f"QIDO-RS {level.lower()} query {req.query_string.decode(errors='replace')[:500]}: "
                  f"{len(page)} results")
    body = orjson.dumps(out)
    warnings = []
    if _fuzzy:
        warnings.append('299 fhirserver: "fuzzymatching applies to person names only '
                        '(case-insensitive substring match)"')
    remaining = total - offset - len(page)
    if remaining > 0:
        warnings.append(f'299 fhirserver: "There are {remaining} additional results that can be requested"')
    return body, [("Warning", ", ".join(warnings))] if warnings else []


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_SPLIT_VRS = frozenset({"CS", "UI", "LO", "SH"})
_RETRIEVE_URL = "00081190"


def _json_template(q: Dataset) -> list[tuple[str, str, str, Any]] | None:
    """(tag, VR, keyword, query value) of each return key, in tag order, for `dicom_json`; None
    when a key has a VR that it does not write (sequences...): the library's way then."""
    out = []
    for elem in q:
        kw = elem.keyword
        if not kw or kw == "QueryRetrieveLevel":
            continue
        if elem.VR not in _TEXT_VRS and elem.VR not in _INT_VRS and elem.VR != "PN":
            return None
        out.append((f"{elem.tag:08X}", elem.VR, kw, elem.value))
    return out


def _json_template_of(q: Dataset, elems: list[tuple[int, str, str, bool]]) -> list[tuple[str, str, str, Any]] | None:
    """`_json_template(q)` from the elements `_build_query` added (the same list: each tag once,
    in tag order), without walking the Dataset; only SpecificCharacterSet's query value is
    used by `dicom_json`, the others are not read from the Dataset."""
    out = []
    for tag, vr, kw, _match in sorted(elems):
        if kw == "QueryRetrieveLevel":
            continue
        if vr not in _TEXT_VRS and vr not in _INT_VRS and vr != "PN":
            return None
        out.append((f"{tag:08X}", vr, kw, q[tag].value if kw == "SpecificCharacterSet" else None))
    return out


def _json_value(value: Any, vr: str) -> list[Any] | None:
    """The DICOM JSON "Value" of an index value (what `query.response_for` then pydicom's
    `to_json_dict` make of it), None for an empty one."""
    if value is None:
        return None
    if vr in _INT_VRS:
        if isinstance(value, (list, tuple)):
            return [int(v) for v in value] or None
        try:
            return [int(value)]
        except (TypeError, ValueError):
            return None
    if isinstance(value, (list, tuple)):
        values = [str(v) for v in value]
    else:
        text = str(value)
        values = text.split("\\") if "\\" in text and vr in _SPLIT_VRS else [text]
    if values == [""] or not values:
        return None
    if vr == "PN":
        if any("=" in v for v in values):
            raise ValueError("a name with ideographic or phonetic groups")  # the library splits them
        return [{"Alphabetic": v} if v else None for v in values]
    return [v if v != "" else None for v in values]


def dicom_json(item: dict[str, Any], template: list[tuple[str, str, str, Any]], url: str) -> dict[str, Any] | None:
    """One QIDO result in DICOM JSON (PS3.18 F.2) straight from the index values: the same
    object as `query.response_for(...).to_json_dict()` with RetrieveURL, without building a
    pydicom Dataset per result (that was a third of a query's CPU). None for a value it does not
    write the same way (the caller then takes the library's way)."""
    out: dict[str, Any] = {_RETRIEVE_URL: {"vr": "UR", "Value": [url]}}
    for tag, vr, kw, qvalue in template:
        value = item.get(kw)
        if value is None and kw == "SpecificCharacterSet":
            value = qvalue
        entry: dict[str, Any] = {"vr": vr}
        try:
            json_value = _json_value(value, vr)
        except ValueError:
            return None
        if json_value is not None:
            entry["Value"] = json_value
        out[tag] = entry
    return dict(sorted(out.items()))  # tag order, as the library writes it


def _study_only(uid: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = uid
    ds.QueryRetrieveLevel = "STUDY"
    return ds
