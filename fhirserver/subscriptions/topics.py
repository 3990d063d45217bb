"""The topics this server offers: which writes are events, and what a subscriber may filter on.

Each topic's canonical URL names its resource type. A trigger looks at the previous content (None
for a create) and the new one (None for a delete), so "becoming final" fires once, not on every
later edit of a final report.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from fhirserver.model import parse_reference

TOPIC_BASE = "http://fhirserver.local/SubscriptionTopic/"

Trigger = Callable[[dict[str, Any] | None, dict[str, Any] | None], bool]


@dataclasses.dataclass(frozen=True)
class Topic:
    url: str
    res_type: str
    title: str
    description: str
    trigger: Trigger
    # filter name -> FHIRPath-like list of element paths whose references/codes it matches
    filters: dict[str, tuple[str, ...]]

    @property
    def id(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _status(body: dict[str, Any] | None) -> str | None:
    return body.get("status") if isinstance(body, dict) else None


def _study_written(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    return new is not None


def _report_final(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    return _status(new) == "final" and _status(old) != "final"


def _appointment_booked_or_cancelled(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    return _status(new) in ("booked", "cancelled") and _status(old) != _status(new)


TOPICS: tuple[Topic, ...] = (
    Topic(TOPIC_BASE + "ImagingStudy-new-or-updated", "ImagingStudy", "New or updated ImagingStudy",
          "An ImagingStudy was created or updated (a scan arrived over DICOM, STOW-RS or REST).",
          _study_written, {"patient": ("subject",), "subject": ("subject",), "status": ("status",)}),
    Topic(TOPIC_BASE + "DiagnosticReport-final", "DiagnosticReport", "DiagnosticReport became final",
          "A DiagnosticReport was written with status final and was not final before.",
          _report_final, {"patient": ("subject",), "subject": ("subject",), "status": ("status",)}),
    Topic(TOPIC_BASE + "Appointment-booked-or-cancelled", "Appointment", "Appointment booked or cancelled",
          "An Appointment's status became booked or cancelled.",
          _appointment_booked_or_cancelled,
          {"patient": ("participant.actor",), "actor": ("participant.actor",), "status": ("status",)}),
)
BY_URL = {t.url: t for t in TOPICS}
TOPIC_TYPES = frozenset(t.res_type for t in TOPICS)


def topics_for(res_type: str) -> list[Topic]:
    return [t for t in TOPICS if t.res_type == res_type]


def _values(body: Any, path: str) -> list[Any]:
    """The values at a dotted element path (arrays flattened)."""
    items = [body]
    for part in path.split("."):
        nxt: list[Any] = []
        for it in items:
            if isinstance(it, dict) and part in it:
                v = it[part]
                nxt.extend(v if isinstance(v, list) else [v])
        items = nxt
    return items


def matches(topic: Topic, filters: list[tuple[str, list[str]]], body: dict[str, Any], base: str) -> bool:
    """Whether the focus passes every filter (each a name and its OR-ed values)."""
    for name, wanted in filters:
        found: set[str] = set()
        for path in topic.filters[name]:
            for v in _values(body, path):
                if isinstance(v, str):
                    found.add(v)
                elif isinstance(v, dict):
                    ref = parse_reference(v, base)
                    if ref.res_type and ref.res_id:
                        found.add(f"{ref.res_type}/{ref.res_id}")
        if not found & set(wanted):
            return False
    return True


def normalize_filter_value(topic: Topic, name: str, value: str, base: str) -> str:
    """A filter value in the form `matches` compares: `Type/id` for references, else the code."""
    if name == "status":
        return value
    ref = parse_reference(value, base)
    if ref.res_type and ref.res_id:
        return f"{ref.res_type}/{ref.res_id}"
    if name == "patient" and "/" not in value:
        return f"Patient/{value}"
    raise ValueError(f"'{value}' is not a reference this server can match for {name}")
