"""C-FIND (and QIDO) matching over the index, per PS3.4 C.2.2.2: single value, universal,
wildcard (* ?), range (DA/TM/DT), UID lists, multi-valued attributes; return keys filled in."""
from __future__ import annotations

import functools
import re
from typing import Any, Iterable, Iterator

from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from dicom.access import visible_only
from dicom.tables import dicom_instance, dicom_series, dicom_study

PATIENT_ATTRS = {
    "PatientName": "patient_name", "PatientID": "patient_id", "IssuerOfPatientID": "issuer",
    "PatientBirthDate": "birth_date", "PatientSex": "sex",
}
STUDY_ATTRS = {
    "StudyInstanceUID": "study_uid", "StudyDate": "study_date", "StudyTime": "study_time",
    "AccessionNumber": "accession", "StudyID": "study_id", "StudyDescription": "description",
    "ReferringPhysicianName": "referring_physician",
}
SERIES_ATTRS = {
    "SeriesInstanceUID": "series_uid", "Modality": "modality", "SeriesNumber": "series_number",
    "SeriesDescription": "description", "BodyPartExamined": "body_part",
    "SeriesDate": "series_date", "SeriesTime": "series_time",
}
INSTANCE_ATTRS = {
    "SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class_uid", "InstanceNumber": "instance_number",
    "NumberOfFrames": "number_of_frames", "Rows": "rows", "Columns": "columns",
}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_SKIP = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability",
         "TimezoneOffsetFromUTC"}


class QueryError(ValueError):
    """An identifier the SCP cannot process (C-FIND status 0xA900 / 0xC000)."""


# -- matching ------------------------------------------------------------------------------
def _vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    try:
        return dictionary_VR(tag) if tag is not None else "LO"
    except KeyError:
        return "LO"


def _norm(value: Any, vr: str) -> str:
    text = "" if value is None else str(value).strip()
    if vr == "PN":
        text = text.rstrip("^ =").upper()
    return text


def _wildcard(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.S)


def match_value(stored: Any, query: Any, vr: str) -> bool:
    """Does one stored value (possibly multi-valued, as list or backslash text) match the query?"""
    if query is None:
        return True
    if isinstance(query, (list, tuple)) or type(query).__name__ == "MultiValue":
        options = [str(q) for q in query]
        q = "\\".join(options)
    else:
        q = str(query)
    q = q.strip()
    if q == "" or q == "*":
        return True  # universal matching
    if stored is None or str(stored).strip() == "":
        return False
    values = [str(v) for v in stored] if isinstance(stored, (list, tuple)) else str(stored).split("\\")
    values = [_norm(v, vr) for v in values]
    options = [o for o in q.split("\\")] if vr in ("UI", "DA", "TM", "DT", "CS", "SH", "LO", "PN", "IS",
                                                   "AE") else [q]
    for option in options:
        opt = _norm(option, vr)
        for v in values:
            if _match_one(v, opt, vr):
                return True
    return False


def _match_one(value: str, q: str, vr: str) -> bool:
    if vr in ("DA", "TM", "DT"):
        value = value.replace(":", "") if vr == "TM" else value
        q = q.replace(":", "") if vr == "TM" else q
        if "-" in q and (vr != "DT" or q.count("-") == 1):
            low, _, high = q.partition("-")
            if low and value < low:
                return False
            if high and value[:len(high)] > high:
                return False
            return True
        if vr == "TM" and len(q) < len(value):
            return value[:len(q)] == q  # "10" matches 10:xx:xx
        return value == q
    if vr == "UI":
        return value == q
    if "*" in q or "?" in q:
        return bool(_wildcard(q).match(value))
    if vr in ("IS", "DS", "US", "UL", "SS", "SL"):
        try:
            return float(value) == float(q)
        except ValueError:
            return False
    return value == q


def match_dataset(item: dict[str, Any], query: Dataset) -> bool:
    """Does a candidate (keyword -> value; sequences as lists of dicts) match every query key?"""
    for elem in query:
        kw = elem.keyword
        if not kw or kw in _SKIP:
            continue
        if elem.VR == "SQ":
            if not elem.value:
                continue
            items = item.get(kw) or []
            if not any(match_dataset(i, elem.value[0]) for i in items):
                return False
            continue
        if elem.value in (None, "") or (isinstance(elem.value, (list, tuple)) and not elem.value):
            continue
        if kw not in item:
            continue  # unsupported matching key: treated as a return key (PS3.4 C.2.2.1.1)
        if not match_value(item.get(kw), elem.value, elem.VR):
            return False
    return True


def matching_keys(elems: Iterable[tuple[str, str, Any]]) -> list[tuple[str, str, Any]] | None:
    """The (keyword, VR, value) of the query elements `match_dataset` would match on, for
    `match_keys`; None when one is a sequence with an item (only `match_dataset` matches those).
    Taken once per query, so matching each candidate does not walk the Dataset again."""
    out = []
    for kw, vr, value in elems:
        if not kw or kw in _SKIP:
            continue
        if vr == "SQ":
            if not value:
                continue
            return None
        if value in (None, "") or (isinstance(value, (list, tuple)) and not value):
            continue
        out.append((kw, vr, value))
    return out


def match_keys(item: dict[str, Any], keys: list[tuple[str, str, Any]]) -> bool:
    """`match_dataset` with the query's `matching_keys`."""
    for kw, vr, value in keys:
        if kw not in item:
            continue  # unsupported matching key: treated as a return key (PS3.4 C.2.2.1.1)
        if not match_value(item.get(kw), value, vr):
            return False
    return True


def response_for(item: dict[str, Any], query: Dataset, extra: dict[str, Any] | None = None) -> Dataset:
    """The identifier to return: every requested key, with its value or empty."""
    ds = Dataset()
    for elem in query:
        kw = elem.keyword
        if not kw:
            continue
        if elem.VR == "SQ":
            items = item.get(kw) or []
            seq = []
            for it in items[:1] if elem.value else items[:1]:
                template = elem.value[0] if elem.value else Dataset()
                seq.append(response_for(it, template))
            setattr(ds, kw, seq)
            continue
        value = item.get(kw)
        if value is None:
            value = elem.value if kw in ("QueryRetrieveLevel", "SpecificCharacterSet") else None
        setattr(ds, kw, _as_dicom(value, elem.VR))
    for kw, value in (extra or {}).items():
        setattr(ds, kw, value)
    return ds


def _as_dicom(value: Any, vr: str) -> Any:
    if value is None:
        return None if vr not in ("SQ",) else []
    if isinstance(value, (list, tuple)):
        return list(value)
    if vr in ("IS", "US", "UL", "SS", "SL"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    text = str(value)
    if "\\" in text and vr in ("CS", "UI", "LO", "SH"):
        return text.split("\\")
    return text


# -- candidates from the index -----------------------------------------------------------------
def _uids(query: Dataset, keyword: str) -> list[str] | None:
    value = query.get(keyword)
    if value in (None, ""):
        return None
    vals = [str(v) for v in value] if not isinstance(value, str) else str(value).split("\\")
    vals = [v.strip() for v in vals if v.strip()]
    return vals or None


def _exact(query: Dataset, keyword: str) -> str | None:
    value = query.get(keyword)
    if value in (None, "") or not isinstance(value, str):
        return None
    if any(c in value for c in "*?\\"):
        return None
    return value.strip() or None


def _keys(query: Dataset) -> dict[str, Any]:
    """The query's keys the index can narrow on (exact values and UID lists), as bind values."""
    keys: dict[str, Any] = {}
    for name, kw in (("study_uids", "StudyInstanceUID"), ("series_uids", "SeriesInstanceUID"),
                     ("sop_uids", "SOPInstanceUID")):
        uids = _uids(query, kw)
        if uids:
            keys[name] = uids
    for name, kw in (("patient_id", "PatientID"), ("accession", "AccessionNumber")):
        value = _exact(query, kw)
        if value:
            keys[name] = value
    return keys


_ST = tuple(c.label(f"st_{c.name}") for c in dicom_study.c)
_SE = tuple(c.label(f"se_{c.name}") for c in dicom_series.c)


@functools.lru_cache(maxsize=64)
def _statement(level: str, shape: frozenset[str]) -> Any:
    """The SELECT of one level for one shape of keys (which ones are present), with bind
    parameters for their values. Statements are immutable; building one costs several times
    its execution, so each shape is built once (a memo, not state: same inputs, same output)."""
    st, se, i = dicom_study.c, dicom_series.c, dicom_instance.c
    where = []
    if "study_uids" in shape:
        where.append(st.study_uid.in_(bindparam("study_uids", expanding=True)))
    if "patient_id" in shape:
        where.append(st.patient_id == bindparam("patient_id"))
    if "accession" in shape:
        where.append(st.accession == bindparam("accession"))
    if level == "STUDY":  # also PATIENT: per (study, series, SOP class), a handful of rows per study
        return (select(*_ST, i.series_uid, se.modality, i.sop_class_uid, func.count().label("n"))
                .select_from(dicom_study.join(dicom_instance, i.study_uid == st.study_uid)
                             .outerjoin(dicom_series, se.series_uid == i.series_uid))
                .where(*where)
                .group_by(st.pk, i.series_uid, se.modality, i.sop_class_uid)
                .order_by(st.pk))
    if "series_uids" in shape:
        where.append(se.series_uid.in_(bindparam("series_uids", expanding=True)))
    joined = dicom_series.join(dicom_study, st.study_uid == se.study_uid)
    if level == "SERIES":
        return (select(*_ST, *_SE, func.count().label("n"))
                .select_from(joined.join(dicom_instance, i.series_uid == se.series_uid))
                .where(*where).group_by(dicom_series.c.pk, st.pk).order_by(dicom_series.c.pk))
    if "sop_uids" in shape:
        where.append(i.sop_uid.in_(bindparam("sop_uids", expanding=True)))
    return (select(dicom_instance, *_ST, *_SE)
            .select_from(dicom_instance.join(joined, se.series_uid == i.series_uid))
            .where(*where).order_by(i.series_uid, i.instance_number))


def _rows(conn: Connection, level: str, query: Dataset, policy: Any) -> Any:
    """The index rows of `level` for the query's keys, of the studies the caller may see: one
    statement, the access gate's condition folded in (`dicom.access.visible_only`)."""
    keys = _keys(query)
    if level == "STUDY":
        keys.pop("series_uids", None)
        keys.pop("sop_uids", None)
    elif level == "SERIES":
        keys.pop("sop_uids", None)
    return conn.execute(visible_only(_statement(level, frozenset(keys)), policy), keys)


def _attrs(m: Any, mapping: dict[str, str], prefix: str) -> dict[str, Any]:
    return {kw: m[prefix + col] for kw, col in mapping.items()}


def _study_level(conn: Connection, query: Dataset, policy: Any) -> dict[str, dict[str, Any]]:
    """Per visible study with instances: its row and what its instances add up to."""
    out: dict[str, dict[str, Any]] = {}
    for row in _rows(conn, "STUDY", query, policy):
        m = row._mapping
        st = out.get(m["st_study_uid"])
        if st is None:
            st = out[m["st_study_uid"]] = {"row": m, "series": set(), "instances": 0,
                                           "modalities": set(), "classes": set()}
        st["series"].add(m["series_uid"])
        st["instances"] += m["n"]
        st["classes"].add(m["sop_class_uid"])
        if m["modality"]:
            st["modalities"].add(m["modality"])
    return out


def candidates(conn: Connection, level: str, query: Dataset, *, policy: Any) -> Iterator[dict[str, Any]]:
    """Index entries at `level` as keyword -> value dicts, pre-filtered on the UID keys, of the
    studies the caller's `policy` lets it see (the access gate's condition, in the same
    statement). Every level is built from those studies only: a patient's counts and
    demographics never come from a study the caller may not see (two clinics may use the same
    PatientID for different people). One query per call, whatever the number of results."""
    if level not in LEVELS:
        raise QueryError(f"unknown QueryRetrieveLevel {level!r}")
    if level in ("PATIENT", "STUDY"):
        stats = _study_level(conn, query, policy)
        if level == "STUDY":
            for st in stats.values():
                m = st["row"]
                item = {**_attrs(m, PATIENT_ATTRS, "st_"), **_attrs(m, STUDY_ATTRS, "st_")}
                item["ModalitiesInStudy"] = sorted(st["modalities"])
                item["SOPClassesInStudy"] = sorted(st["classes"])
                item["NumberOfStudyRelatedSeries"] = len(st["series"])
                item["NumberOfStudyRelatedInstances"] = st["instances"]
                yield item
            return
        patients: dict[tuple, dict[str, Any]] = {}
        for st in stats.values():
            m = st["row"]
            key = (m["st_patient_id"], m["st_issuer"])
            p = patients.setdefault(key, {**_attrs(m, PATIENT_ATTRS, "st_"),
                                          "NumberOfPatientRelatedStudies": 0,
                                          "NumberOfPatientRelatedSeries": 0,
                                          "NumberOfPatientRelatedInstances": 0})
            p["NumberOfPatientRelatedStudies"] += 1
            p["NumberOfPatientRelatedSeries"] += len(st["series"])
            p["NumberOfPatientRelatedInstances"] += st["instances"]
        yield from patients.values()
        return
    if level == "SERIES":
        for row in _rows(conn, "SERIES", query, policy):
            m = row._mapping
            yield {**_attrs(m, PATIENT_ATTRS, "st_"), **_attrs(m, STUDY_ATTRS, "st_"),
                   **_attrs(m, SERIES_ATTRS, "se_"), "NumberOfSeriesRelatedInstances": m["n"]}
        return
    for row in _rows(conn, "IMAGE", query, policy):
        m = row._mapping
        item = {**_attrs(m, PATIENT_ATTRS, "st_"), **_attrs(m, STUDY_ATTRS, "st_"),
                **_attrs(m, SERIES_ATTRS, "se_"), **_row_attrs(row, INSTANCE_ATTRS)}
        item["_storage_key"] = m["storage_key"]
        item["_transfer_syntax"] = m["transfer_syntax"]
        yield item


def _row_attrs(row: Any, mapping: dict[str, str]) -> dict[str, Any]:
    m = row._mapping
    return {kw: m[col] for kw, col in mapping.items()}


def find(conn: Connection, query: Dataset, *, policy: Any, root: str = "patient",
         retrieve_ae: str | None = None) -> Iterator[Dataset]:
    """C-FIND: the response identifiers for `query` at its QueryRetrieveLevel, of what the
    caller's `policy` lets it see."""
    level = str(query.get("QueryRetrieveLevel", "")).strip().upper()
    if root == "study" and level == "PATIENT":
        raise QueryError("PATIENT level is not part of the Study Root information model")
    extra = {"RetrieveAETitle": retrieve_ae} if retrieve_ae and "RetrieveAETitle" not in query else {}
    for item in candidates(conn, level, query, policy=policy):
        if match_dataset(item, query):
            item = {**item, "QueryRetrieveLevel": level}
            if retrieve_ae:
                item["RetrieveAETitle"] = retrieve_ae
            yield response_for(item, query, extra)


def retrieve(conn: Connection, query: Dataset, *, policy: Any) -> list[dict[str, Any]]:
    """C-MOVE/C-GET: the instances selected by the unique keys of `query` that the caller's
    `policy` lets it see."""
    level = str(query.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"unknown QueryRetrieveLevel {level!r}")
    keys = Dataset()
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if kw in query and query.get(kw) not in (None, ""):
            setattr(keys, kw, query.get(kw))
    if len(keys) == 0:
        raise QueryError("no unique key to retrieve")
    return [item for item in candidates(conn, "IMAGE", keys, policy=policy) if match_dataset(item, keys)]


__all__ = ["QueryError", "find", "match_dataset", "match_keys", "matching_keys", "match_value", "response_for", "retrieve",
           "candidates"]
