"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnail
resources; and WADO-URI (PS3.18 9) for older viewers. Files leave the store as they were received
unless the client asks for a transfer syntax they can be converted to (Explicit VR Little Endian)."""
from __future__ import annotations

from io import BytesIO
from typing import Any, Iterator

import orjson
from flask import Response, request
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom.web import render as rnd
from dicom.web.common import DICOM_JSON, audit, base_url, check, error, rows_for, services
from dicom.web.multipart import MediaType, multipart_stream, new_boundary, parse_accept

CHUNK = 1 << 20
_NATIVE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
# compressed transfer syntax -> frame media type (PS3.18 Table 8.7.3-2)
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def _store() -> Any:
    return services().blobs


def _rows(study: str, series: str | None = None, sop: str | None = None) -> list[Any]:
    return rows_for(check("read"), study, series, sop)


def _file_chunks(key: str, store: Any = None) -> Iterator[bytes]:
    yield from (store or _store()).stream(key, chunk_size=CHUNK)  # one ranged/streamed read, never whole


def _transcode(key: str, target: str, store: Any = None) -> bytes:
    """The stored file rewritten in `target` (Explicit VR Little Endian only)."""
    with (store or _store()).open(key) as f:
        ds = dcmread(f)
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    if ts.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = UID(target)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


# -- retrieve instances --------------------------------------------------------------------
def _dicom_accept() -> tuple[bool, set[str] | None]:
    """(single-part allowed, acceptable transfer syntaxes; None = as stored)."""
    return accept_plan(request.headers.get("Accept"))


def accept_plan(header: str | None) -> tuple[bool, set[str] | None]:
    """`_dicom_accept` of an Accept header value; 406 when no instance media type fits."""
    accepted = parse_accept(header)
    syntaxes: set[str] = set()
    any_ok = False
    single = False
    for m in accepted:
        ok = False
        if m.mime == "multipart/related" and (m.param("type") or "application/dicom").lower() == "application/dicom":
            ok = True
        elif m.mime in ("*/*", "multipart/*"):
            ok = True
        elif m.mime == "application/dicom":
            ok, single = True, True
        if not ok:
            continue
        any_ok = True
        ts = m.param("transfer-syntax")
        if ts:
            syntaxes.add(ts.strip())
        else:
            syntaxes.add("*")
    if not any_ok:
        raise error(406, "Instances are returned as multipart/related; type=\"application/dicom\"; "
                         f"cannot answer Accept: {header}")
    only_single = single and all(m.mime == "application/dicom" for m in accepted)
    return only_single, (None if "*" in syntaxes else syntaxes)


def retrieve(study: str, series: str | None = None, sop: str | None = None) -> Response:
    single, syntaxes = _dicom_accept()
    rows = _rows(study, series, sop)
    plan: list[tuple[Any, str | None]] = []  # (row, transcode target or None)
    for r in rows:
        if syntaxes is None or r.transfer_syntax in syntaxes:
            plan.append((r, None))
        elif ExplicitVRLittleEndian in syntaxes and _can_convert(r.transfer_syntax):
            plan.append((r, ExplicitVRLittleEndian))
        else:
            raise error(406, f"Instance {r.sop_uid} is stored as {r.transfer_syntax} and cannot be converted "
                             f"to {', '.join(sorted(syntaxes))}; ask for transfer-syntax=* or "
                             f"{ExplicitVRLittleEndian}")
    audit("retrieve", [study], f"WADO-RS {len(rows)} instance(s)")
    store = _store()  # the generator runs after the request context is gone

    def content(row: Any, target: str | None) -> Iterator[bytes]:
        if target is None:
            yield from _file_chunks(row.storage_key, store)
        else:
            yield _transcode(row.storage_key, target, store)

    if single and len(plan) == 1:
        row, target = plan[0]
        resp = Response(content(row, target), content_type=f"application/dicom; transfer-syntax="
                                                            f"{target or row.transfer_syntax}")
        if target is None:
            resp.headers["Content-Length"] = str(row.size)
        return resp
    boundary = new_boundary()
    parts = ((f"application/dicom; transfer-syntax={target or row.transfer_syntax}", content(row, target))
             for row, target in plan)
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    resp = Response(multipart_stream(parts, boundary), content_type=ctype, direct_passthrough=True)
    if all(target is None for _r, target in plan):  # sizes known: a Content-Length, not chunks
        framing = sum(len(f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax="
                          f"{row.transfer_syntax}\r\n\r\n") + 2 for row, _t in plan)
        resp.headers["Content-Length"] = str(sum(row.size for row, _t in plan) + framing
                                             + len(f"--{boundary}--\r\n"))
    return resp


def _can_convert(ts: str) -> bool:
    u = UID(ts)
    return u in _NATIVE or u.is_compressed


# -- metadata ----------------------------------------------------------------------------------
def _bulk_handler(url: str):  # noqa: ANN202
    def handler(elem: Any) -> str:
        return f"{url}/bulkdata/{elem.tag:08X}"
    return handler


def instance_metadata(row: Any, base: str) -> dict[str, Any]:
    url = f"{base}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"
    with _store().open(row.storage_key) as f:
        ds = dcmread(f, stop_before_pixels=True)
        has_pixels = "PixelData" not in ds and row.rows is not None
    out = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=_bulk_handler(url))
    if has_pixels:
        vr = "OW" if UID(row.transfer_syntax) in _NATIVE and int(ds.get("BitsAllocated", 16) or 16) > 8 else "OB"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return out


def metadata(study: str, series: str | None = None, sop: str | None = None) -> Response:
    for m in parse_accept(request.headers.get("Accept")):
        if m.mime in ("application/dicom+json", "application/json", "*/*", "application/*"):
            break
    else:
        raise error(406, "Metadata is returned as application/dicom+json only")
    rows = _rows(study, series, sop)
    base = base_url()
    out = [instance_metadata(r, base) for r in rows]
    audit("retrieve", [study], f"WADO-RS metadata of {len(rows)} instance(s)")
    return Response(orjson.dumps(out), content_type=DICOM_JSON)


# -- frames and bulk data -----------------------------------------------------------------------
def _frame_numbers(text: str) -> list[int]:
    try:
        nums = [int(p) for p in text.replace("%2C", ",").split(",") if p.strip()]
    except ValueError:
        raise error(400, f"Frame numbers are a comma-separated list of positive integers, not '{text}'") from None
    if not nums or any(n < 1 for n in nums):
        raise error(400, "Frame numbers start at 1")
    return nums


def _native_frames(ds: Any, nums: list[int]) -> list[bytes]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise error(406, "Frames of 1-bit pixel data are not supported; retrieve the bulk data instead")
    size = rows * cols * spp * bits // 8
    data = ds.PixelData
    return [bytes(data[(n - 1) * size:n * size]) for n in nums]


def frames(study: str, series: str, sop: str, frame_list: str) -> Response:
    nums = _frame_numbers(frame_list)
    row = _rows(study, series, sop)[0]
    count = row.number_of_frames or 1
    if row.rows is None:
        raise error(404, f"Instance {sop} has no pixel data (no frames)")
    bad = [n for n in nums if n > count]
    if bad:
        raise error(404, f"Instance {sop} has {count} frame(s); no frame {bad[0]}")
    accepted = parse_accept(request.headers.get("Accept"))
    stored_ts = UID(row.transfer_syntax)
    compressed_type = FRAME_TYPES.get(str(stored_ts))
    send_compressed = False
    want_octet = False
    for m in accepted:
        inner = m.param("type") if m.mime == "multipart/related" else m.mime
        inner = (inner or "application/octet-stream").lower()
        ts = m.param("transfer-syntax")
        if inner in ("*/*", "image/*") and compressed_type:
            send_compressed = True
            break
        if compressed_type and inner == compressed_type and (not ts or ts in ("*", str(stored_ts))):
            send_compressed = True
            break
        if inner in ("application/octet-stream", "*/*"):
            if compressed_type and ts in ("*", str(stored_ts)):
                send_compressed = True
                break
            want_octet = True
            break
    if not send_compressed and not want_octet:
        raise error(406, f"Frames are available as application/octet-stream"
                         + (f" or {compressed_type}" if compressed_type else "")
                         + f"; cannot answer Accept: {request.headers.get('Accept')}")
    with _store().open(row.storage_key) as f:
        ds = dcmread(f)
    if send_compressed:
        from pydicom.encaps import generate_frames

        all_frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        payloads = [all_frames[n - 1] for n in nums]
        ptype = f"{compressed_type}; transfer-syntax={stored_ts}"
    elif stored_ts in _NATIVE:
        payloads = _native_frames(ds, nums)
        ptype = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    else:
        from pydicom.pixels import pixel_array

        payloads = []
        for n in nums:
            try:
                with _store().open(row.storage_key) as f:
                    arr = pixel_array(f, index=n - 1, raw=True)
            except Exception as exc:  # noqa: BLE001
                raise error(406, f"Cannot decode {stored_ts} frames: {exc}") from None
            payloads.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        ptype = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    audit("retrieve", [study], f"WADO-RS frames {','.join(map(str, nums))} of {sop}")
    boundary = new_boundary()
    mime = ptype.split(";")[0]
    body = multipart_stream(((ptype, [p]) for p in payloads), boundary)
    return Response(b"".join(body), content_type=f'multipart/related; type="{mime}"; boundary={boundary}')


def _find_elem(ds: Any, tag: int) -> Any:
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find_elem(item, tag)
                if found is not None:
                    return found
    return None


def bulkdata(study: str, series: str, sop: str, tag: str) -> Response:
    try:
        tag_int = int(tag, 16)
    except ValueError:
        raise error(400, f"Bulk data is addressed by an 8-digit hex tag, not '{tag}'") from None
    row = _rows(study, series, sop)[0]
    ok = False
    for m in parse_accept(request.headers.get("Accept")):
        inner = (m.param("type") if m.mime == "multipart/related" else m.mime) or "application/octet-stream"
        if inner.lower() in ("application/octet-stream", "*/*"):
            ok = True
            break
    if not ok:
        raise error(406, "Bulk data is returned as multipart/related; type=\"application/octet-stream\"")
    with _store().open(row.storage_key) as f:
        ds = dcmread(f)
    elem = _find_elem(ds, tag_int)
    if elem is None or elem.value is None:
        raise error(404, f"Instance {sop} has no bulk data element {tag}")
    value = elem.value if isinstance(elem.value, (bytes, bytearray)) else None
    if value is None:
        raise error(404, f"Element {tag} of instance {sop} is not bulk data")
    audit("retrieve", [study], f"WADO-RS bulk data {tag} of {sop}")
    boundary = new_boundary()
    ptype = f"application/octet-stream; transfer-syntax={row.transfer_syntax}"
    body = b"".join(multipart_stream([(ptype, [bytes(value)])], boundary))
    return Response(body, content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


# -- rendered and thumbnails ------------------------------------------------------------------
def _render_response(row: Any, frame: int, *, thumbnail: bool, mime: str | None = None,
                     window: str | None = None, viewport: str | None = None,
                     quality: str | None = None, study: str = "") -> Response:
    try:
        mime = rnd.choose_type(parse_accept(request.headers.get("Accept")), mime)
        win = rnd.parse_window(window)
        vp = rnd.parse_viewport(viewport)
        q = rnd.parse_quality(quality)
        if row.rows is None:
            raise rnd.RenderError(406, f"Instance {row.sop_uid} has no pixel data to render")
        count = row.number_of_frames or 1
        if frame >= count:
            raise rnd.RenderError(404, f"Instance {row.sop_uid} has {count} frame(s); no frame {frame + 1}")
        with _store().open(row.storage_key) as f:
            data = rnd.render(f, frame, mime, window=win, viewport=vp, quality=q, thumbnail=thumbnail)
    except rnd.RenderError as exc:
        raise error(exc.status, str(exc)) from None
    audit("retrieve", [study or row.study_uid], f"WADO-RS {'thumbnail' if thumbnail else 'rendered'} "
                                                f"frame {frame + 1} of {row.sop_uid}")
    resp = Response(data, content_type=mime)
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp


def _representative(rows: list[Any]) -> Any:
    """The middle image of the first series that has pixel data."""
    with_pixels = [r for r in rows if r.rows is not None]
    if not with_pixels:
        raise error(406, "No instance here has pixel data to render")
    first_series = with_pixels[0].series_uid
    same = [r for r in with_pixels if r.series_uid == first_series]
    return same[len(same) // 2]


def rendered(study: str, series: str | None = None, sop: str | None = None, frame: int | None = None,
             thumbnail: bool = False) -> Response:
    rows = _rows(study, series, sop)
    if sop is None:
        if not thumbnail:
            raise error(406, "Rendered studies and series (multi-image answers) are not supported; "
                             "ask for an instance's /rendered or a /thumbnail")
        row = _representative(rows)
        index = ((row.number_of_frames or 1) // 2) if (row.number_of_frames or 1) > 1 else 0
    else:
        row = rows[0]
        if frame is not None:
            index = frame - 1
        elif thumbnail and (row.number_of_frames or 1) > 1:
            index = (row.number_of_frames or 1) // 2
        else:
            index = 0
    if index < 0:
        raise error(400, "Frame numbers start at 1")
    args = request.args
    return _render_response(row, index, thumbnail=thumbnail, window=args.get("window"),
                            viewport=args.get("viewport"), quality=args.get("quality"), study=study)


# -- WADO-URI ----------------------------------------------------------------------------------
def wado_uri() -> Response:
    args = request.args
    if args.get("requestType") != "WADO":
        raise error(400, "WADO-URI needs requestType=WADO")
    study, series, sop = args.get("studyUID"), args.get("seriesUID"), args.get("objectUID")
    if not (study and series and sop):
        raise error(400, "WADO-URI needs studyUID, seriesUID and objectUID")
    content_type = (args.get("contentType") or "").split(",")[0].strip().lower()
    row = _rows(study, series, sop)[0]
    if content_type in ("application/dicom",):
        wanted = args.get("transferSyntax")
        if wanted and wanted != row.transfer_syntax:
            if wanted != ExplicitVRLittleEndian or not _can_convert(row.transfer_syntax):
                raise error(406, f"Cannot convert {row.transfer_syntax} to {wanted}")
            data: Any = _transcode(row.storage_key, wanted)
            ts = wanted
        else:
            data, ts = _file_chunks(row.storage_key, _store()), row.transfer_syntax
        audit("retrieve", [study], f"WADO-URI {sop} as application/dicom")
        resp = Response(data, content_type=f"application/dicom; transfer-syntax={ts}")
        resp.headers["Content-Disposition"] = f'attachment; filename="{sop}.dcm"'
        return resp
    if content_type and content_type not in rnd.RENDER_TYPES:
        raise error(406, f"WADO-URI contentType {content_type} is not supported "
                         "(application/dicom, image/jpeg, image/png, image/gif)")
    rows_, cols_ = args.get("rows"), args.get("columns")
    viewport = None
    if rows_ or cols_:
        try:
            r = int(rows_) if rows_ else None
            c = int(cols_) if cols_ else None
        except ValueError:
            raise error(400, "rows and columns must be integers") from None
        ir, ic = row.rows or 1, row.columns or 1
        if r is None:
            r = max(1, round(ic and c * ir / ic))
        if c is None:
            c = max(1, round(r * ic / ir))
        viewport = f"{c},{r}"
    window = None
    if args.get("windowCenter") or args.get("windowWidth"):
        if not (args.get("windowCenter") and args.get("windowWidth")):
            raise error(400, "windowCenter and windowWidth go together")
        window = f"{args['windowCenter']},{args['windowWidth']}"
    try:
        frame = int(args.get("frameNumber") or 1) - 1
    except ValueError:
        raise error(400, "frameNumber must be an integer") from None
    if frame < 0:
        raise error(400, "frameNumber starts at 1")
    return _render_response(row, frame, thumbnail=False, mime=content_type or None, window=window,
                            viewport=viewport, quality=args.get("imageQuality"), study=study)


__all__ = ["MediaType", "accept_plan", "bulkdata", "frames", "metadata", "rendered", "retrieve", "wado_uri"]
