"""Is a received image whole? Pixel data length against what the image attributes promise.

A modality whose pixel data was cut short (a full disk on its side, a broken export) may have
nothing better to send, so such an instance is kept byte for byte; but it is answered with a
warning status instead of plain success and flagged, so nobody reads it as a whole image.

Only the element headers are looked at, in the received buffer, from the position where the
header read stopped (the Pixel Data element): no copy, no decoding of the pixels.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010
_FLOAT_PIXELS = ("FloatPixelData", "DoubleFloatPixelData")
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_DEFLATED = "1.2.840.10008.1.2.1.99"
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return int(float(value))
    except (TypeError, ValueError, IndexError):
        return default


def expected_native_length(ds: Any) -> int | None:
    """Bytes of native (uncompressed) pixel data the attributes promise; None when they do not
    say (no Rows/Columns/BitsAllocated)."""
    rows, cols, bits = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "BitsAllocated")
    if not rows or not cols or not bits:
        return None
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    frames = max(_int(ds, "NumberOfFrames", 1) or 1, 1)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.5 8.2)
    total_bits = rows * cols * samples * bits * frames
    return (total_bits + 7) // 8


def _element_header(raw: memoryview, pos: int, implicit: bool, little: bool) -> tuple[int, int, int] | None:
    """(tag, value length, header length) of the element at `pos`; None when cut off."""
    end = "<" if little else ">"
    if pos + 8 > len(raw):
        return None
    group, elem = struct.unpack_from(end + "HH", raw, pos)
    tag = group << 16 | elem
    if implicit or tag in (_ITEM, _SEQ_END):
        return tag, struct.unpack_from(end + "I", raw, pos + 4)[0], 8
    vr = bytes(raw[pos + 4:pos + 6])
    if not (vr.isalpha() and vr.isupper()):  # implicit VR under an explicit transfer syntax, as
        return tag, struct.unpack_from(end + "I", raw, pos + 4)[0], 8  # pydicom reads it too
    if vr in _LONG_VRS:
        if pos + 12 > len(raw):
            return None
        return tag, struct.unpack_from(end + "I", raw, pos + 8)[0], 12
    return tag, struct.unpack_from(end + "H", raw, pos + 6)[0], 8


def _fragments(raw: memoryview, pos: int) -> tuple[int, bool]:
    """(fragments with data, ended by the sequence delimiter) of encapsulated pixel data at
    `pos` (the first item: the basic offset table). Items are always little endian."""
    seen = 0
    first = True
    while True:
        head = _element_header(raw, pos, True, True)
        if head is None:
            return seen, False
        tag, length, size = head
        if tag == _SEQ_END:
            return seen, True
        if tag != _ITEM or length == 0xFFFFFFFF or pos + size + length > len(raw):
            return seen, False
        if not first and length:
            seen += 1
        first = False
        pos += size + length


def check(ds: Any, data: memoryview | bytes, pixel_offset: int, transfer_syntax: str) -> str | None:
    """Why the instance is not whole, or None when it is (or when it is not an image at all).

    `ds`: the elements before the pixel data; `data`: the received data set bytes;
    `pixel_offset`: where the header read stopped (the Pixel Data element or the end)."""
    if any(k in ds for k in _FLOAT_PIXELS):
        return None  # float pixel images: not checked here
    expected = expected_native_length(ds)
    if expected is None:
        return None  # no image attributes: SR, waveform, plan... nothing to measure
    ts = UID(transfer_syntax)
    raw = memoryview(data)
    if ts == _DEFLATED:
        try:  # the header read inflated the data set; do the same to find the pixel data
            raw = memoryview(zlib.decompress(bytes(raw), -zlib.MAX_WBITS))
        except zlib.error:
            return "deflated data set cannot be inflated"
        return _check_at(raw, _find_pixel_data(raw), expected, encapsulated=False, implicit=False, little=True)
    if not ts.is_transfer_syntax:
        return None
    return _check_at(raw, pixel_offset, expected, encapsulated=ts.is_compressed,
                     implicit=ts.is_implicit_VR, little=ts.is_little_endian)


def _find_pixel_data(raw: memoryview) -> int:
    """Offset of the top-level Pixel Data element of an explicit VR little endian data set."""
    pos = 0
    while pos < len(raw):
        head = _element_header(raw, pos, False, True)
        if head is None:
            return len(raw)
        tag, length, size = head
        if tag >= PIXEL_DATA:
            return pos
        if length == 0xFFFFFFFF:  # an undefined-length sequence before the pixels: skip it
            pos = _skip_undefined(raw, pos + size)
            if pos < 0:
                return len(raw)
            continue
        pos += size + length
    return pos


def _skip_undefined(raw: memoryview, pos: int) -> int:
    """Offset just after the sequence delimiter matching an undefined-length sequence."""
    depth = 1
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        tag = group << 16 | elem
        if tag == _SEQ_END:
            depth -= 1
            pos += 8
            if depth == 0:
                return pos
            continue
        if tag in (_ITEM, 0xFFFEE00D):
            pos += 8
            if tag == _ITEM and length != 0xFFFFFFFF:
                pos += length
            continue
        head = _element_header(raw, pos, False, True)
        if head is None:
            return -1
        _tag, length, size = head
        if length == 0xFFFFFFFF:
            depth += 1
            pos += size
        else:
            pos += size + length
    return -1


def _check_at(raw: memoryview, pos: int, expected: int, *, encapsulated: bool, implicit: bool,
              little: bool) -> str | None:
    head = _element_header(raw, pos, implicit, little)
    if head is None or head[0] != PIXEL_DATA:
        return "pixel data missing"
    _tag, length, size = head
    if length == 0xFFFFFFFF:
        fragments, ended = _fragments(raw, pos + size)
        if not fragments:
            return "encapsulated pixel data without any fragment"
        if not ended:
            return "encapsulated pixel data cut short"
        return None
    if encapsulated:
        return "compressed pixel data not encapsulated"
    available = len(raw) - pos - size
    got = min(length, available)
    if got < expected:
        return f"pixel data {got} of {expected} bytes"
    return None
