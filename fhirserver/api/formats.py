"""Content negotiation: which format a client sends and wants, and writing bodies in it."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import orjson

from fhirserver.errors import FhirError
from fhirserver.model import JsonFormatError, Raw, apply_summary, dumps, loads

JSON_MIMES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
XML_MIMES = ("application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml")
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FORM = "application/x-www-form-urlencoded"
_FORMAT_ALIASES = {"json": "json", "xml": "xml", "html": "json", "text/html": "json"}


@dataclasses.dataclass(frozen=True)
class OutputFormat:
    kind: str            # json | xml
    mime: str            # Content-Type to answer with
    pretty: bool = False
    summary: str | None = None
    elements: tuple[str, ...] = ()

    @property
    def transforms(self) -> bool:
        return self.kind != "json" or self.pretty or bool(self.elements) or self.summary not in (None, "false", "count")


def _mime_kind(mime: str) -> str | None:
    mime = mime.split(";")[0].strip().lower()
    if mime in JSON_MIMES:
        return "json"
    if mime in XML_MIMES:
        return "xml"
    return None


def choose_output(format_param: str | None, accept: str | None, pretty: str | None = None,
                  summary: str | None = None, elements: str | None = None) -> OutputFormat:
    """The answer's format: `_format` wins over Accept; JSON when the client does not care."""
    kind, mime = "json", "application/fhir+json"
    if format_param:
        f = format_param.strip().lower().replace(" ", "+")
        k = _FORMAT_ALIASES.get(f) or _mime_kind(f)
        if k is None:
            raise FhirError(406, f"_format '{format_param}' is not supported (json or xml)", "not-supported")
        kind = k
        mime = "application/fhir+json" if k == "json" else "application/fhir+xml"
        if f in JSON_MIMES + XML_MIMES:
            mime = f
    elif accept:
        best = _from_accept(accept)
        if best is None:
            raise FhirError(406, f"Cannot answer in any of: {accept} (json or xml)", "not-supported")
        kind, mime = best
    elems = tuple(e.strip() for e in (elements or "").split(",") if e.strip())
    return OutputFormat(kind, mime, (pretty or "").lower() == "true", summary, elems)


def _from_accept(accept: str) -> tuple[str, str] | None:
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        bits = [b.strip() for b in part.split(";")]
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, i, bits[0].lower()))
    for _q, _i, mime in sorted(ranked):
        kind = _mime_kind(mime)
        if kind:
            return kind, mime
        if mime in ("*/*", "application/*", "text/html", "text/*"):
            return "json", "application/fhir+json"
    return None


def parse_body(content_type: str | None, data: bytes) -> tuple[Any, str]:
    """Parse a request body by its Content-Type. Returns (body, kind: resource|json-patch|form)."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == FORM:
        return None, "form"
    if not data.strip():
        return None, "resource"
    if mime in (JSON_PATCH, MERGE_PATCH):
        try:
            return loads(data), "json-patch" if mime == JSON_PATCH else "merge-patch"
        except JsonFormatError as exc:
            raise FhirError(400, str(exc), "structure") from None
    kind = _mime_kind(mime) if mime else None
    if kind == "json":
        try:
            return loads(data), "resource"
        except JsonFormatError as exc:
            raise FhirError(400, str(exc), "structure") from None
    if kind == "xml":
        from fhirserver.model import XmlFormatError, xml_to_resource

        try:
            return xml_to_resource(data), "resource"
        except XmlFormatError as exc:
            raise FhirError(400, f"Body is not valid FHIR XML: {exc}", "structure") from None
    raise FhirError(415, f"Unsupported Content-Type '{content_type or ''}': send application/fhir+json "
                    "or application/fhir+xml (and for PATCH also application/json-patch+json or "
                    "application/merge-patch+json)", "not-supported")


def _prepare(node: Any, fmt: OutputFormat, top: bool) -> Any:
    """Turn stored text into something the serializer takes; apply _summary/_elements to resources."""
    if isinstance(node, str) and type(node) is not str:  # Raw / interactions._Raw
        if not fmt.transforms:
            return orjson.Fragment(str(node))
        node = loads(str(node))
    if isinstance(node, dict):
        if node.get("resourceType") == "Bundle" and isinstance(node.get("entry"), list):
            node = dict(node)
            node["entry"] = [_prepare_entry(e, fmt) for e in node["entry"]]
            return node
        if not top or node.get("resourceType") != "Bundle":
            return apply_summary(node, fmt.summary, list(fmt.elements) or None) if fmt.transforms else node
    return node


def _prepare_entry(entry: Any, fmt: OutputFormat) -> Any:
    if isinstance(entry, dict) and "resource" in entry:
        entry = dict(entry)
        entry["resource"] = _prepare(entry["resource"], fmt, False)
    return entry


def render(body: Any, fmt: OutputFormat) -> bytes:
    """Serialise a resource (dict or stored text) in the chosen format."""
    if isinstance(body, str):
        if not fmt.transforms:
            return body.encode()
        body = loads(body)
    prepared = _prepare(body, fmt, True)
    if fmt.kind == "xml":
        from fhirserver.model import XmlFormatError, resource_to_xml

        try:
            return resource_to_xml(_materialize(prepared), pretty=fmt.pretty)
        except XmlFormatError as exc:  # stored before such values were refused at write
            raise FhirError(406, f"This content cannot be written as XML ({exc}); ask for JSON",
                            "not-supported") from None
    if isinstance(prepared, orjson.Fragment):
        return bytes(prepared.contents) if isinstance(prepared.contents, (bytes, bytearray)) else \
            str(prepared.contents).encode()
    return dumps(prepared, pretty=fmt.pretty)


def _materialize(node: Any) -> Any:
    """Replace serializer fragments by parsed dicts (XML needs the structure)."""
    if isinstance(node, orjson.Fragment):
        return loads(node.contents)
    if isinstance(node, dict):
        return {k: _materialize(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_materialize(v) for v in node]
    return node


def header_map(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def wants_pdf(path: str, accept: str | None) -> bool:
    """`GET DiagnosticReport/{id}` asking for application/pdf: answered by `$render`."""
    segs = [s for s in path.split("/") if s]
    return bool(accept and "application/pdf" in accept.lower() and len(segs) == 2
                and segs[0] == "DiagnosticReport")
