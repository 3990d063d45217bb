"""The one request parser: a FHIR URL (path below the base, query) into a `FhirRequest`.

HTTP requests and Bundle entries both come through `parse_url`, so `GET Patient/1/Observation`
is the same compartment search whether it is sent alone or as `Bundle.entry.request`. URL shapes
(R4 http.html):

    [type]                      search-type, create, conditional update/patch/delete
    [type]/[id]                 read, update, patch, delete
    [type]/[id]/_history        history-instance;  [type]/[id]/_history/[vid]  vread
    [type]/_history, _history   history-type, history-system
    [type]/_search, _search     search by POST
    $op, [type]/$op, [type]/[id]/$op   operations
    [comp]/[id]/[type|*]        compartment search (and .../_search by POST)

Which method a shape takes is the router's decision (fhirserver.interactions.router), so an
unsuitable method gets the same 405 over HTTP and in a Bundle.
"""
from __future__ import annotations

from typing import Iterable
from urllib.parse import parse_qsl, urlsplit

from fhirserver.errors import FhirError
from fhirserver.interactions.context import FhirRequest
from fhirserver.model import R4_RESOURCE_TYPES

_SPECIAL = ("_history", "_search")


def _unknown(segments: list[str]) -> FhirError:
    return FhirError(404, f"Unknown URL {'/'.join(segments)}", "not-found")


def _ends_at(req: FhirRequest, operation: str, rest: list[str], segments: list[str]) -> FhirRequest:
    """`req` naming `operation`, which must be the path's last segment (an operation, `_history`
    or `_search` takes no sub-path)."""
    if rest:
        raise _unknown(segments)
    req.operation = operation
    return req


def parse_path(method: str, segments: list[str], params: Iterable[tuple[str, str]] = (),
               headers: dict[str, str] | None = None) -> FhirRequest:
    """The interaction named by `method` and the path segments below the FHIR base."""
    req = FhirRequest(method=method.upper(), params=list(params), headers=dict(headers or {}))
    if not segments:
        return req
    first, rest = segments[0], segments[1:]
    if first.startswith("$") or first in _SPECIAL:  # system level: $op, _history, _search
        return _ends_at(req, first, rest, segments)
    req.res_type = first
    if not rest:
        return req
    second, rest = rest[0], rest[1:]
    if second.startswith("$") or second in _SPECIAL:  # type level
        return _ends_at(req, second, rest, segments)
    req.res_id = second
    if not rest:
        return req
    third, rest = rest[0], rest[1:]
    if third.startswith("$"):  # instance operation
        return _ends_at(req, third, rest, segments)
    if third == "_history":
        if len(rest) > 1:
            raise _unknown(segments)
        req.operation = "_history"
        req.version_id = rest[0] if rest else None
    elif third == "_search":
        raise _unknown(segments)
    else:  # compartment search: Patient/123/Observation, Patient/123/*, .../_search
        if rest not in ([], ["_search"]):
            raise _unknown(segments)
        req.compartment = (req.res_type or "", req.res_id or "")
        req.res_type, req.res_id = (None if third == "*" else third), None
        req.operation = "_search" if rest else None
    return req


def split_url(url: str, base: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Path segments below the base and query parameters of a Bundle entry's `request.url`.

    A relative URL is below our base; an absolute one with our base is cut to what follows it;
    another server's absolute URL (as in HL7's ussg-fht example) keeps its trailing
    `Type[/id[/_history/vid]]` part."""
    if url.startswith(base + "/") or url == base:
        url = url[len(base):]
    elif "://" in url:
        parts = urlsplit(url)
        segs = [p for p in parts.path.split("/") if p]
        start = next((i for i in range(len(segs)) if segs[i] in R4_RESOURCE_TYPES and len(segs) - i <= 4),
                     len(segs))
        return segs[start:], parse_qsl(parts.query, keep_blank_values=True)
    path, _, query = url.lstrip("/").partition("?")
    return [p for p in path.split("/") if p], parse_qsl(query, keep_blank_values=True)


def parse_url(method: str, url: str, base: str, headers: dict[str, str] | None = None) -> FhirRequest:
    """The interaction a Bundle entry's `request.method` and `request.url` name."""
    segments, params = split_url(url, base)
    return parse_path(method, segments, params, headers)


__all__ = ["parse_path", "parse_url", "split_url"]
