"""Helpers of the subscription tests: a loopback rest-hook receiver and Subscription bodies."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from live_helpers import wait_for  # noqa: F401 - the subscription tests import it from here

EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://fhirserver.local/SubscriptionTopic/"
STUDY_TOPIC = TOPIC + "ImagingStudy-new-or-updated"
REPORT_TOPIC = TOPIC + "DiagnosticReport-final"
APPOINTMENT_TOPIC = TOPIC + "Appointment-booked-or-cancelled"
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


class Receiver:
    """A rest-hook endpoint on a free loopback port: records every POST (headers and Bundle)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200          # what it answers
        self.hold: threading.Event | None = None  # set: requests wait for it before answering
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body, "path": self.path})
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def bundles(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r["body"] for r in list(self.received) if kind is None or notification_type(r["body"]) == kind]

    def events(self) -> list[dict[str, Any]]:
        return self.bundles("event-notification")


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][0]["resource"]


def param(params: dict[str, Any], name: str) -> Any:
    for p in params.get("parameter", []):
        if p["name"] == name:
            return next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
    return None


def notification_type(bundle: dict[str, Any]) -> str | None:
    return param(status_of(bundle), "type")


def event_numbers(bundle: dict[str, Any]) -> list[int]:
    out = []
    for p in status_of(bundle).get("parameter", []):
        if p["name"] == "notification-event":
            out += [int(x["valueString"]) for x in p["part"] if x["name"] == "event-number"]
    return out


def focus_refs(bundle: dict[str, Any]) -> list[str]:
    out = []
    for p in status_of(bundle).get("parameter", []):
        if p["name"] == "notification-event":
            out += [x["valueReference"]["reference"] for x in p["part"] if x["name"] == "focus"]
    return out


def subscription(topic: str, endpoint: str, *, filters: list[str] = (), content: str = "full-resource",
                 headers: list[str] = (), heartbeat: int | None = None, status: str = "requested") -> dict:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": EXT + "backport-payload-content",
                                                           "valueCode": content}]}}
    if headers:
        channel["header"] = list(headers)
    if heartbeat is not None:
        channel["extension"] = [{"url": EXT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    body: dict[str, Any] = {"resourceType": "Subscription", "status": status, "reason": "test",
                            "meta": {"profile": [EXT + "backport-subscription"]},
                            "criteria": topic, "channel": channel}
    if filters:
        body["_criteria"] = {"extension": [{"url": EXT + "backport-filter-criteria", "valueString": f}
                                           for f in filters]}
    return body


def study(pid: str | None, uid: str = "1.2.3.4", status: str = "available") -> dict[str, Any]:
    """An ImagingStudy of Patient/pid (None: of a patient no filter names)."""
    return {"resourceType": "ImagingStudy", "status": status,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
            "subject": {"reference": f"Patient/{pid or 'p0'}"}}
