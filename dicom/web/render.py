"""Rendered images (PS3.18 8.3.5 / 10.4.1.1.3): one frame decoded by pydicom (compressed pixel
data through the installed pylibjpeg/openjpeg/rle plugins), modality LUT, VOI window (request's
`window=center,width[,linear|linear-exact|sigmoid]`, else the instance's, else min-max),
MONOCHROME1 inverted, cropped and scaled to the viewport, encoded as JPEG or PNG."""
from __future__ import annotations

from io import BytesIO
from typing import Any, BinaryIO

import numpy as np

RENDER_TYPES = ("image/jpeg", "image/png", "image/gif")
THUMBNAIL_SIZE = 128


class RenderError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def choose_type(accepted: list[Any], explicit: str | None = None) -> str:
    """The image type for an Accept list (MediaType objects, best first); 406 when none fits."""
    if explicit:
        e = explicit.strip().lower()
        if e in RENDER_TYPES:
            return e
        raise RenderError(406, f"Rendered media type '{explicit}' is not supported (image/jpeg, image/png, image/gif)")
    for m in accepted:
        if m.mime in ("*/*", "image/*"):
            return "image/jpeg"
        if m.mime in RENDER_TYPES:
            return m.mime
    wanted = ", ".join(m.mime for m in accepted)
    raise RenderError(406, f"Cannot render as {wanted}; rendered resources are image/jpeg, image/png or image/gif")


def parse_window(text: str | None) -> tuple[float, float, str] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError(400, "window is center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise RenderError(400, f"window center and width must be numbers, not '{text}'") from None
    func = (parts[2] if len(parts) == 3 else "linear").lower()
    if func not in ("linear", "linear-exact", "sigmoid"):
        raise RenderError(400, f"window function '{func}' is not linear, linear-exact or sigmoid")
    if width <= 0 or (func == "linear" and width < 1):
        raise RenderError(400, "window width must be positive (at least 1 for linear)")
    return center, width, func


def parse_viewport(text: str | None) -> tuple[int, int, tuple[int, int, int, int] | None] | None:
    if not text:
        return None
    try:
        vals = [int(float(p)) if p.strip() else 0 for p in text.split(",")]
    except (ValueError, OverflowError):  # 1e999 is a float (inf) no int holds
        raise RenderError(400, f"viewport is vw,vh[,sx,sy,sw,sh] as integers, not '{text}'") from None
    if len(vals) not in (2, 6):
        raise RenderError(400, "viewport is vw,vh[,sx,sy,sw,sh]")
    vw, vh = vals[0], vals[1]
    if vw <= 0 or vh <= 0 or vw > 8192 or vh > 8192:
        raise RenderError(400, "viewport width and height must be between 1 and 8192")
    region = tuple(vals[2:]) if len(vals) == 6 else None
    return vw, vh, region  # type: ignore[return-value]


def parse_quality(text: str | None) -> int:
    if not text:
        return 90
    try:
        q = int(text)
    except ValueError:
        raise RenderError(400, f"quality must be an integer 1-100, not '{text}'") from None
    if not 1 <= q <= 100:
        raise RenderError(400, "quality must be between 1 and 100")
    return q


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def load_frame(src: BinaryIO, frame: int) -> tuple[np.ndarray, Any]:
    """(pixels of frame `frame` (0-based), the dataset without pixel data)."""
    from pydicom import Dataset
    from pydicom.pixels import pixel_array

    ds = Dataset()
    try:
        arr = pixel_array(src, index=frame, ds_out=ds)
    except (NotImplementedError, RuntimeError) as exc:
        raise RenderError(406, f"Cannot decode the pixel data: {exc}") from None
    except (AttributeError, KeyError) as exc:
        raise RenderError(406, f"The instance has no renderable pixel data ({exc})") from None
    except ValueError as exc:
        raise RenderError(406, f"Cannot decode the pixel data: {exc}") from None
    return arr, ds


def to_8bit(arr: np.ndarray, ds: Any, window: tuple[float, float, str] | None) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour: already RGB after decoding
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            arr = (arr.astype(np.float64) * (255.0 / max(1, (1 << bits) - 1))).clip(0, 255)
        return arr[..., :3].astype(np.uint8)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        scale = 255.0 / 65535.0 if rgb.dtype != np.uint8 else 1.0
        return (rgb.astype(np.float64) * scale).clip(0, 255).astype(np.uint8)
    data = arr.astype(np.float64)
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    data = data * slope + intercept
    if window is None:
        c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        if c is not None and w is not None and w > 0:
            window = (c, max(w, 1.0), "linear")
    if window is None:
        lo, hi = float(data.min()), float(data.max())
        out = (data - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(data)
    else:
        c, w, func = window
        if func == "linear-exact":
            out = ((data - c) / w + 0.5) * 255.0
        elif func == "sigmoid":
            out = 255.0 / (1.0 + np.exp(-4.0 * (data - c) / w))
        else:  # PS3.3 C.11.2.1.2.1
            out = ((data - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0 if w > 1 else \
                np.where(data <= c - 0.5, 0.0, 255.0)
    out = out.clip(0, 255)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def render(src: BinaryIO, frame: int, mime: str, *, window: tuple[float, float, str] | None = None,
           viewport: tuple[int, int, tuple[int, int, int, int] | None] | None = None,
           quality: int = 90, thumbnail: bool = False) -> bytes:
    from PIL import Image

    arr, ds = load_frame(src, frame)
    img8 = to_8bit(arr, ds, window)
    img = Image.fromarray(img8, "RGB" if img8.ndim == 3 else "L")
    if viewport is not None:
        vw, vh, region = viewport
        if region is not None:
            sx, sy, sw, sh = region
            W, H = img.size
            sw = sw or (W - sx)
            sh = sh or (H - sy)
            flip_x, flip_y = sw < 0, sh < 0
            x0, x1 = sorted((sx, sx + sw))
            y0, y1 = sorted((sy, sy + sh))
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
            if x1 <= x0 or y1 <= y0:
                raise RenderError(400, "the viewport's source region is outside the image")
            img = img.crop((x0, y0, x1, y1))
            if flip_x:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if flip_y:
                img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        img = _fit(img, vw, vh)
    elif thumbnail:
        img = _fit(img, THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    buf = BytesIO()
    if mime == "image/png":
        img.save(buf, "PNG", compress_level=1)
    elif mime == "image/gif":
        img.save(buf, "GIF")
    else:
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _fit(img: Any, vw: int, vh: int) -> Any:
    from PIL import Image

    W, H = img.size
    scale = min(vw / W, vh / H)
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC)
