"""Helpers of the DICOMweb tests: synthetic CT instances as bytes, multipart bodies, parsing."""
from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom import dcmread

from dicom_helpers import ct_dataset, save_part10

BOUNDARY = "test-boundary-42"


def ct_bytes(*, window: tuple[float, float] | None = None, **attrs: Any) -> bytes:
    """A CT slice as the Part 10 bytes a STOW-RS part carries (`attrs`: those `ct_dataset` takes)."""
    ds = ct_dataset(**attrs)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    buf = BytesIO()
    save_part10(ds, buf)
    return buf.getvalue()


def multipart(parts: list[bytes], boundary: str = BOUNDARY, part_type: str = "application/dicom") -> bytes:
    out = BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(part Content-Type, content) of a multipart answer."""
    from dicom.web.multipart import parse_media_type, parse_multipart

    mt = parse_media_type(content_type)
    assert mt.mime == "multipart/related", content_type
    return [(h.get("content-type", ""), c) for h, c in parse_multipart(body, mt.param("boundary") or "")]


def uid_of(data: bytes) -> str:
    return str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def value(ds_json: dict, tag: str):  # noqa: ANN201
    v = ds_json.get(tag, {}).get("Value")
    return v[0] if v else None
