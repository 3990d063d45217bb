"""STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom" in, each part filed exactly
like a C-STORE (the same instance store, index rows, ImagingStudy bridge and patient matching),
the store result out as DICOM JSON with 200 (all stored), 202 (some failed) or 409 (all failed)."""
from __future__ import annotations

from io import BytesIO
from typing import Any

import orjson
from flask import Response, request
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom import index
from dicom.bridge import update_studies
from dicom.handlers import STORAGE_CLASSES
from dicom.durable import make_durable
from dicom.tables import dicom_study
from dicom.access import visible_studies
from dicom.web.common import DICOM_JSON, audit, base_url, check, error, services
from dicom.web.multipart import MultipartError, parse_media_type, parse_multipart

# Failure reasons (PS3.18 Table 10.5.3-2 / PS3.4 B.2.3)
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
STUDY_UID_MISMATCH = 0xC409  # "Study Instance UID does not match" (PS3.18 10.5.3.1)


class _Failed(Exception):
    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _as_part10(data: bytes) -> bytes:
    """The part as a DICOM file with preamble (a part may omit the 128-byte preamble)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    if data[:4] == b"DICM":
        return b"\x00" * 128 + data
    if data[:2] == b"\x02\x00":  # file meta group without the preamble and prefix
        return b"\x00" * 128 + b"DICM" + data
    raise _Failed(CANNOT_UNDERSTAND, "the part is not a DICOM file (no DICM prefix and file meta information)")


def _check_part(headers: dict[str, str], data: bytes, target_study: str | None) -> tuple[bytes, Dataset, str]:
    ctype = parse_media_type(headers.get("content-type", "application/dicom"))
    if ctype.mime not in ("application/dicom", ""):
        raise _Failed(CANNOT_UNDERSTAND, f"part Content-Type {ctype.mime} is not application/dicom")
    if not data:
        raise _Failed(CANNOT_UNDERSTAND, "empty part")
    data = _as_part10(data)
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - unparsable data of any kind
        raise _Failed(CANNOT_UNDERSTAND, f"cannot parse the part: {exc}") from None
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        raise _Failed(CANNOT_UNDERSTAND, "the file meta information has no TransferSyntaxUID")
    return data, ds, ts


def _sop(ds: Dataset | None, key: str) -> str:
    if ds is None:
        return ""
    return str(ds.get(key, "") or "").strip()


def store_parts(target_study: str | None) -> Response:
    pol = check("create")
    ctype_text = request.headers.get("Content-Type", "")
    ctype = parse_media_type(ctype_text)
    if ctype.mime != "multipart/related":
        raise error(415, f"STOW-RS takes multipart/related; type=\"application/dicom\", not "
                         f"'{ctype_text or 'no Content-Type'}'")
    part_type = (ctype.param("type") or "application/dicom").lower()
    if part_type != "application/dicom":
        raise error(415, f"Only type=\"application/dicom\" parts are supported (got type=\"{part_type}\"); "
                         "the metadata and bulk data form is not supported")
    if not ctype.param("boundary"):
        raise error(400, "The multipart/related Content-Type has no boundary parameter")
    try:
        parts = parse_multipart(request.get_data(cache=False), ctype.param("boundary") or "")
    except MultipartError as exc:
        raise error(400, f"Malformed multipart body: {exc}") from None
    if not parts:
        raise error(400, "The multipart body has no parts")
    svc = services()
    repo = svc.repo
    store = svc.blobs
    accepted: list[tuple[index.InstanceRecord, Dataset]] = []
    failed: list[tuple[str, str, int, str]] = []
    # studies the caller may not add to: existing ones outside its access
    candidates: list[tuple[dict[str, str], bytes, Dataset | None, str, Exception | None]] = []
    for headers, data in parts:
        try:
            data, ds, ts = _check_part(headers, data, target_study)
            candidates.append((headers, data, ds, ts, None))
        except _Failed as exc:
            candidates.append((headers, data, None, "", exc))
    study_uids = {_sop(ds, "StudyInstanceUID") for _h, _d, ds, _t, exc in candidates if ds is not None}
    study_uids.discard("")
    with repo.engine.connect() as conn:
        existing = set(conn.execute(select(dicom_study.c.study_uid).where(
            dicom_study.c.study_uid.in_(sorted(study_uids)))).scalars()) if study_uids else set()
        allowed_existing = visible_studies(conn, pol, existing) if existing else set()
    for headers, data, ds, ts, exc in candidates:
        sop_class, sop_uid = _sop(ds, "SOPClassUID"), _sop(ds, "SOPInstanceUID")
        try:
            if exc is not None:
                raise exc
            assert ds is not None
            study = _sop(ds, "StudyInstanceUID")
            if target_study and study != target_study:
                raise _Failed(STUDY_UID_MISMATCH, f"StudyInstanceUID {study or '(none)'} is not the study "
                                                  f"of the request URL ({target_study})")
            if sop_class and sop_class not in STORAGE_CLASSES:
                raise _Failed(SOP_CLASS_NOT_SUPPORTED, f"SOP Class {sop_class} is not a storage class")
            meta = ds.file_meta
            if str(meta.get("MediaStorageSOPInstanceUID", sop_uid) or sop_uid).strip() != sop_uid:
                raise _Failed(DOES_NOT_MATCH, "MediaStorageSOPInstanceUID differs from SOPInstanceUID")
            if study in existing and study not in allowed_existing:
                raise _Failed(NOT_AUTHORIZED, "The study exists and is outside this token's access")
            try:
                index.extract(ds, ts, "0" * 64, 0, "DICOMWEB")  # validates before anything is written
            except index.InvalidInstance as e:
                raise _Failed(DOES_NOT_MATCH, str(e)) from None
            try:
                key, size = store.put((data,))
                if svc.settings.dicom_fsync:  # on disk before the answer says it is stored
                    make_durable(store, key)
            except OSError as e:
                raise _Failed(OUT_OF_RESOURCES, f"cannot write the instance: {e}") from None
            accepted.append((index.extract(ds, ts, key, size, "DICOMWEB"), ds))
        except _Failed as f:
            failed.append((sop_class, sop_uid, f.reason, str(f)))
    studies: set[str] = set()
    unbridged: list[str] = []
    if accepted:
        try:
            with repo.transaction(write=True) as tx:
                studies = index.write_batch(tx.conn, [r for r, _ in accepted])
        except Exception:  # noqa: BLE001
            from dicom.web.common import log

            log.exception("dicomweb: index write failed")
            failed.extend((_sop(ds, "SOPClassUID"), _sop(ds, "SOPInstanceUID"), PROCESSING_FAILURE,
                           "the index write failed") for _r, ds in accepted)
            accepted = []
        if studies:  # the Endpoint gets the configured address, as for C-STORE (not this Host header)
            # matched to the patients the sender may see, as for C-STORE from a node
            made = update_studies(repo, studies, svc.settings.root_url + "/dicomweb", pol)
            unbridged = sorted(uid for uid in studies if made.get(uid) is None)
    base = base_url()
    result = Dataset()
    url_study = target_study or (next(iter(studies)) if len(studies) == 1 else None)
    if url_study:
        result.RetrieveURL = f"{base}/studies/{url_study}"
    if failed:
        items = []
        for cls, uid, reason, _msg in failed:
            it = Dataset()
            it.ReferencedSOPClassUID = cls or ""
            it.ReferencedSOPInstanceUID = uid or ""
            it.FailureReason = reason
            items.append(it)
        result.FailedSOPSequence = items
    if accepted:
        items = []
        for rec, _ds in accepted:
            it = Dataset()
            it.ReferencedSOPClassUID = rec.instance["sop_class_uid"]
            it.ReferencedSOPInstanceUID = rec.instance["sop_uid"]
            it.RetrieveURL = (f"{base}/studies/{rec.study_uid}/series/{rec.series['series_uid']}"
                              f"/instances/{rec.instance['sop_uid']}")
            items.append(it)
        result.ReferencedSOPSequence = items
    # instances stored but their ImagingStudy not made: a warning (202), never a silent 200
    status = 200 if not failed and not unbridged else 409 if not accepted else 202
    body_text = orjson.dumps(result.to_json_dict())
    audit("store", studies, f"{len(accepted)} stored, {len(failed)} failed"
          + "".join(f"; {uid or '?'}: {msg}" for _c, uid, _r, msg in failed[:10])
          + "".join(f"; study {uid}: ImagingStudy not updated" for uid in unbridged[:10]),
          outcome="0" if not failed and not unbridged else "4")
    resp = Response(body_text, status=status, content_type=DICOM_JSON)
    warnings = [f"{uid or 'part'}: {msg}" for _c, uid, _r, msg in failed[:5]]
    warnings += [f"study {uid}: stored, but its ImagingStudy could not be updated (sending again retries it)"
                 for uid in unbridged[:5]]
    if warnings:
        joined = "; ".join(warnings).replace("\r", " ").replace("\n", " ")
        resp.headers["Warning"] = "299 fhirserver: " + joined[:900]
    return resp
