"""The one reading of a FHIR Reference string, shared by validation, storage, the index, the
compartments, the access gate and every entry point.

Two readings of one string are how data leaks: if the write check reads `Patient/B/` as "no
patient" while the index reads it as `Patient/B`, a caller writes into B's record. So every
caller asks `parse_reference` and nothing else splits reference strings.

Accepted spellings of a local reference (all read as the same `Type/id`):
  `Type/id`, `Type/id/`, `Type/id/_history/vid`, `Type/id/_history/vid/`, `Type/id/_history/`
  and the same behind this server's own base URL (`https://host/fhir/Type/id`).
`#id` is contained, `urn:uuid:` / `urn:oid:` are bundle-local placeholders, any other absolute URL
is external. Everything else (bad ids, unknown types, extra path segments, queries) is `invalid`:
it links to nothing, for every caller alike.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator

from fhirserver.model.types import R4_RESOURCE_TYPES

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclasses.dataclass(frozen=True)
class Ref:
    """kind: local | contained | urn | external | invalid (type/id set only when local)."""

    kind: str
    res_type: str | None = None
    res_id: str | None = None
    version: str | None = None
    url: str | None = None

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def key(self) -> str | None:
        """`Type/id` of a local reference."""
        return f"{self.res_type}/{self.res_id}" if self.kind == "local" else None


_INVALID = Ref("invalid")


def _local(path: str) -> Ref:
    """`Type/id[/_history/vid]` with at most one trailing slash."""
    if path.endswith("/"):
        path = path[:-1]
    segs = path.split("/")
    version = None
    if len(segs) == 4 and segs[2] == "_history":
        version = segs[3]
        if not _ID.match(version):
            return _INVALID
        segs = segs[:2]
    elif len(segs) == 3 and segs[2] == "_history":
        segs = segs[:2]
    if len(segs) != 2:
        return _INVALID
    t, i = segs
    if t not in R4_RESOURCE_TYPES or not _ID.match(i):
        return _INVALID
    return Ref("local", t, i, version)


def parse_reference(value: Any, base: str | None = None) -> Ref:
    """The one reading of a reference string (or a Reference element) against our `base`."""
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str) or not value or value != value.strip():
        return _INVALID
    if value.startswith("#"):
        return Ref("contained", url=value)
    if value.startswith(("urn:uuid:", "urn:oid:")):
        return Ref("urn", url=value)
    if _ABSOLUTE.match(value):
        root = (base or "").rstrip("/")
        if root and value.startswith(root + "/"):
            ref = _local(value[len(root) + 1:])
            return ref if ref.local else _INVALID
        return Ref("external", url=value)
    if "?" in value or "#" in value:
        return _INVALID
    return _local(value)


def reference_id(value: Any, res_type: str, base: str | None = None) -> str | None:
    """The id of a local reference to `res_type` (`Patient/1`, `{'reference': 'Patient/1'}`), else None."""
    ref = parse_reference(value, base)
    return ref.res_id if ref.local and ref.res_type == res_type else None


def iter_references(body: Any) -> Iterator[str]:
    """Every `reference` string in a resource, outside contained resources."""
    if isinstance(body, dict):
        for k, v in body.items():
            if k == "reference" and isinstance(v, str):
                yield v
            elif k != "contained":
                yield from iter_references(v)
    elif isinstance(body, list):
        for v in body:
            yield from iter_references(v)


def referenced_ids(body: Any, res_type: str, base: str | None = None) -> set[str]:
    """Ids of every `res_type` a resource body references (local references only)."""
    out: set[str] = set()
    for v in iter_references(body):
        ref = parse_reference(v, base)
        if ref.local and ref.res_type == res_type:
            out.add(ref.res_id or "")
    return out


__all__ = ["Ref", "iter_references", "parse_reference", "reference_id", "referenced_ids"]
