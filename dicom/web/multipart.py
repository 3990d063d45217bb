"""multipart/related for DICOMweb (RFC 2387): parsing STOW-RS requests, writing WADO-RS answers,
and the media-type parameters (type, boundary, transfer-syntax) of Content-Type and Accept."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Iterable, Iterator


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related message."""


@dataclass
class MediaType:
    mime: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


def _split_params(text: str) -> list[str]:
    """Split on ';' outside quotes."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out]


def parse_media_type(text: str) -> MediaType:
    head, *rest = _split_params(text or "")
    params: dict[str, str] = {}
    q = 1.0
    for p in rest:
        if not p:
            continue
        name, _, value = p.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"')
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
            continue
        params[name] = value
    return MediaType(head.strip().lower(), params, q)


def _split_commas(text: str) -> list[str]:
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def parse_accept(header: str | None) -> list[MediaType]:
    """The Accept header's media ranges, best first (an absent header accepts anything)."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    items = [parse_media_type(p) for p in _split_commas(header)]
    items = [m for m in items if m.q > 0]
    return sorted(items, key=lambda m: -m.q)


def parse_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body as (headers with lower-case names, content)."""
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    marker = b"--" + boundary.encode("latin-1")
    start = body.find(marker)
    if start < 0:
        raise MultipartError("the body does not contain the boundary given in Content-Type")
    parts: list[tuple[dict[str, str], bytes]] = []
    pos = start + len(marker)
    delimiter = b"\r\n" + marker
    closed = False
    while True:
        if body[pos:pos + 2] == b"--":
            closed = True
            break
        # skip transport padding and the CRLF after the boundary line
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        pos = eol + 2
        nxt = body.find(delimiter, pos)
        if nxt < 0:
            raise MultipartError("a part is not terminated by the boundary (truncated body?)")
        raw = body[pos:nxt]
        sep = raw.find(b"\r\n\r\n")
        if raw.startswith(b"\r\n"):
            head, content = b"", raw[2:]
        elif sep < 0:
            raise MultipartError("a part has no blank line between its headers and its content")
        else:
            head, content = raw[:sep], raw[sep + 4:]
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            if not line.strip():
                continue
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
        pos = nxt + len(delimiter)
    if not closed:
        raise MultipartError("the multipart body has no closing boundary")
    return parts


def new_boundary() -> str:
    return "dicomweb-" + secrets.token_hex(12)


def multipart_stream(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str,
                     extra_headers: Iterable[tuple[str, str]] = ()) -> Iterator[bytes]:
    """Chunks of a multipart body: each part is (Content-Type, chunks of its content)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers)
    for content_type, chunks in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode("latin-1")
        for chunk in chunks:
            yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")
