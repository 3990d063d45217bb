"""An R4 Subscription read as a backport topic-based subscription, or the reason it is not one.

The IG's R4 shape: `criteria` is the topic's canonical URL, its `backport-filter-criteria`
extensions hold `Type?name=value&...` filters; the channel is a rest-hook with `header` lines,
`payload` the MIME type with the `backport-payload-content` extension (empty, id-only,
full-resource), and optional `backport-heartbeat-period`, `backport-timeout`, `backport-max-count`.
"""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhirserver.errors import FhirError
from fhirserver.subscriptions.topics import BY_URL, normalize_filter_value

EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_EXT = EXT + "backport-filter-criteria"
PAYLOAD_EXT = EXT + "backport-payload-content"
HEARTBEAT_EXT = EXT + "backport-heartbeat-period"
TIMEOUT_EXT = EXT + "backport-timeout"
MAX_COUNT_EXT = EXT + "backport-max-count"
PROFILE = EXT + "backport-subscription"
CONTENTS = ("empty", "id-only", "full-resource")
MIME_TYPES = ("application/fhir+json", "application/json")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclasses.dataclass(frozen=True)
class Spec:
    topic: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    content: str
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    heartbeat: int          # seconds, 0: none
    timeout: int            # seconds for one POST
    max_count: int          # events per notification (we send one each; kept for $status)
    off: bool               # status off: no deliveries
    end_ms: int = 0         # Subscription.end: no events after it (0: none)

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "endpoint": self.endpoint, "headers": [list(h) for h in self.headers],
                "content": self.content, "filters": [[n, list(v)] for n, v in self.filters],
                "heartbeat": self.heartbeat, "timeout": self.timeout, "max_count": self.max_count,
                "off": self.off, "end_ms": self.end_ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Spec":
        return cls(d["topic"], d["endpoint"], tuple((a, b) for a, b in d["headers"]), d["content"],
                   tuple((n, tuple(v)) for n, v in d["filters"]), d["heartbeat"], d["timeout"],
                   d["max_count"], d["off"], d.get("end_ms", 0))


def _invalid(msg: str, where: str) -> FhirError:
    from fhirserver.errors import Issue

    return FhirError(422, [Issue("error", "invalid", msg, where)])


def _ext(elem: Any, url: str) -> list[dict[str, Any]]:
    return [e for e in (elem or {}).get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _ext_int(elem: Any, url: str, where: str, default: int, low: int = 0, high: int = 86400) -> int:
    found = _ext(elem, url)
    if not found:
        return default
    e = found[0]
    value = e.get("valueUnsignedInt", e.get("valuePositiveInt", e.get("valueInteger")))
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _invalid(f"{url.rsplit('/', 1)[-1]} must be an integer from {low} to {high}", where)
    return value


def is_topic_based(body: dict[str, Any]) -> bool:
    """A backport subscription: criteria is a canonical URL, or the backport profile is claimed.
    Anything else is an R4 criteria-based one (`Observation?code=...`), which is kept as written
    but never notified (the CapabilityStatement offers topics only)."""
    criteria = body.get("criteria")
    profiles = (body.get("meta") or {}).get("profile") or []
    return (isinstance(criteria, str) and bool(_ABSOLUTE.match(criteria))) or PROFILE in profiles


def parse_spec(body: dict[str, Any], base: str) -> Spec:
    """The subscription's channel, topic and filters; 422 with the offending element otherwise."""
    criteria = body.get("criteria")
    topic = BY_URL.get(criteria) if isinstance(criteria, str) else None
    if topic is None:
        known = ", ".join(BY_URL)
        raise _invalid(f"Subscription.criteria must be the canonical URL of a supported topic ({known})",
                       "Subscription.criteria")
    filters: dict[str, list[str]] = {}
    for e in _ext(body.get("_criteria"), FILTER_EXT):
        text = e.get("valueString")
        if not isinstance(text, str) or not text.strip():
            raise _invalid("backport-filter-criteria needs a valueString such as "
                           f"'{topic.res_type}?patient=Patient/123'", "Subscription._criteria.extension")
        res_type, sep, query = text.strip().partition("?")
        if not sep:
            res_type, query = topic.res_type, text.strip()
        if res_type != topic.res_type:
            raise _invalid(f"The filter '{text}' is on {res_type}; this topic's resource is {topic.res_type}",
                           "Subscription._criteria.extension")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in topic.filters:
                raise _invalid(f"The topic cannot filter by '{name}' (it can by {', '.join(topic.filters)})",
                               "Subscription._criteria.extension")
            values = [v for v in value.split(",") if v]
            if not values:
                raise _invalid(f"The filter {name} has no value", "Subscription._criteria.extension")
            try:
                filters.setdefault(name, []).extend(normalize_filter_value(topic, name, v, base) for v in values)
            except ValueError as exc:
                raise _invalid(str(exc), "Subscription._criteria.extension") from None
    channel = body.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise _invalid("Subscription.channel.type must be rest-hook (the only channel this server offers)",
                       "Subscription.channel.type")
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("Subscription.channel.endpoint must be an http(s) URL", "Subscription.channel.endpoint")
    headers: list[tuple[str, str]] = []
    for i, line in enumerate(channel.get("header") or []):
        name, sep, value = line.partition(":") if isinstance(line, str) else ("", "", "")
        if not sep or not name.strip() or any(c in line for c in "\r\n"):
            raise _invalid("Each channel.header is one 'Name: value' line", f"Subscription.channel.header[{i}]")
        headers.append((name.strip(), value.strip()))
    payload = channel.get("payload")
    if payload is not None and payload not in MIME_TYPES:
        raise _invalid(f"Subscription.channel.payload must be one of {', '.join(MIME_TYPES)}",
                       "Subscription.channel.payload")
    content_ext = _ext(channel.get("_payload"), PAYLOAD_EXT)
    content = content_ext[0].get("valueCode") if content_ext else ("id-only" if payload else "empty")
    if content not in CONTENTS:
        raise _invalid(f"backport-payload-content must be one of {', '.join(CONTENTS)}",
                       "Subscription.channel._payload.extension")
    status = body.get("status")
    end_ms = 0
    if body.get("end") is not None:
        try:
            end = datetime.fromisoformat(str(body["end"]))
            end_ms = int((end if end.tzinfo else end.replace(tzinfo=timezone.utc)).timestamp() * 1000)
        except ValueError:
            raise _invalid("Subscription.end must be an instant", "Subscription.end") from None
    return Spec(topic.url, endpoint, tuple(headers), content,
                tuple((n, tuple(v)) for n, v in filters.items()),
                _ext_int(channel, HEARTBEAT_EXT, "Subscription.channel.extension", 0),
                _ext_int(channel, TIMEOUT_EXT, "Subscription.channel.extension", 10, 1, 120),
                _ext_int(channel, MAX_COUNT_EXT, "Subscription.channel.extension", 1, 1, 1000),
                status == "off", end_ms)
