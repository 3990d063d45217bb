"""Topic-based subscriptions over REST with a loopback rest-hook receiver: handshake, event
notifications for each topic, filters, payload shapes, $status/$events, retries, deletion, and
no event for a write that rolled back."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from fhirserver.subscriptions.tables import subscription_event
from subs_helpers import (
    APPOINTMENT_TOPIC, EXT, JSON, REPORT_TOPIC, STUDY_TOPIC, event_numbers, focus_refs, notification_type,
    param, status_of, study, subscription, wait_for,
)


def _create(client, body):  # noqa: ANN001, ANN202
    r = client.post("/fhir/Subscription", json=body, headers=JSON)
    assert r.status_code == 201, r.get_data(as_text=True)
    return json.loads(r.data)["id"]


def _active(client, sid):  # noqa: ANN001, ANN202
    return wait_for(lambda: json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)["status"]
                    == "active")


def _patient(client, pid):  # noqa: ANN001, ANN202
    r = client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=JSON)
    assert r.status_code in (200, 201)


def test_capability_statement_lists_topics_and_operations(client):  # noqa: ANN001
    cs = json.loads(client.get("/fhir/metadata").data)
    sub = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Subscription")
    topics = {e["valueCanonical"] for e in sub["extension"]
              if e["url"] == EXT + "capabilitystatement-subscriptiontopic-canonical"}
    assert topics == {STUDY_TOPIC, REPORT_TOPIC, APPOINTMENT_TOPIC}
    assert {"status", "events"} <= {o["name"] for o in sub["operation"]}


@pytest.mark.parametrize("change, where", [
    (lambda b: b.update(criteria="http://example.org/no-such-topic"), "criteria"),
    (lambda b: b["channel"].update(type="websocket"), "channel.type"),
    (lambda b: b["channel"].update(endpoint="ftp://x"), "channel.endpoint"),
    (lambda b: b["channel"].update(header=["no colon here"]), "header"),
    (lambda b: b["channel"]["_payload"]["extension"][0].update(valueCode="everything"), "payload"),
    (lambda b: b.update(_criteria={"extension": [{"url": EXT + "backport-filter-criteria",
                                                   "valueString": "ImagingStudy?code=x"}]}), "criteria"),
    (lambda b: b.update(_criteria={"extension": [{"url": EXT + "backport-filter-criteria",
                                                   "valueString": "Observation?patient=Patient/1"}]}), "criteria"),
])
def test_invalid_subscriptions_are_422_and_not_stored(client, clean_subs, receiver, change, where):  # noqa: ANN001
    body = subscription(STUDY_TOPIC, receiver.url)
    change(body)
    r = client.post("/fhir/Subscription", json=body, headers=JSON)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert where in r.get_data(as_text=True)
    assert json.loads(client.get("/fhir/Subscription", headers=JSON).data)["total"] == 0


def test_handshake_then_study_notification_full_resource_with_headers(client, worker, receiver):  # noqa: ANN001
    _patient(client, "p1")
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url, headers=["Authorization: Bearer hook-secret"]))
    _active(client, sid)
    hs = receiver.bundles("handshake")[0]
    assert hs["type"] == "history" and param(status_of(hs), "status") == "requested"
    assert receiver.received[0]["headers"]["authorization"] == "Bearer hook-secret"
    r = client.post("/fhir/ImagingStudy", json=study("p1"), headers=JSON)
    study_id = json.loads(r.data)["id"]
    note = wait_for(receiver.events)[0]
    params = status_of(note)
    assert note["type"] == "history"
    assert params["meta"]["profile"] == [EXT + "backport-subscription-status-r4"]
    assert param(params, "subscription")["reference"].endswith(f"/Subscription/{sid}")
    assert param(params, "topic") == STUDY_TOPIC
    assert param(params, "events-since-subscription-start") == "1"
    assert event_numbers(note) == [1]
    assert focus_refs(note) == [f"http://testserver/fhir/ImagingStudy/{study_id}/_history/1"]
    assert note["entry"][1]["resource"]["id"] == study_id
    assert note["entry"][1]["request"]["method"] == "POST"
    # an update is an event too, numbered next
    body = json.loads(client.get(f"/fhir/ImagingStudy/{study_id}", headers=JSON).data)
    body["description"] = "re-read"
    client.put(f"/fhir/ImagingStudy/{study_id}", json=body, headers=JSON)
    wait_for(lambda: len(receiver.events()) == 2)
    assert event_numbers(receiver.events()[1]) == [2]
    assert receiver.events()[1]["entry"][1]["request"]["method"] == "PUT"


def test_filters_by_patient_and_payload_shapes(client, worker, receiver):  # noqa: ANN001
    for pid in ("p1", "p2"):
        _patient(client, pid)
    ids = {c: _create(client, subscription(STUDY_TOPIC, receiver.url + "/" + c, content=c,
                                           filters=["ImagingStudy?patient=Patient/p1"]))
           for c in ("empty", "id-only", "full-resource")}
    for sid in ids.values():
        _active(client, sid)
    client.post("/fhir/ImagingStudy", json=study("p2", "1.2.9"), headers=JSON)  # not p1's: nobody told
    mine = json.loads(client.post("/fhir/ImagingStudy", json=study("p1"), headers=JSON).data)["id"]
    wait_for(lambda: len(receiver.events()) == 3)
    by_path = {r["path"].rsplit("/", 1)[-1]: r["body"] for r in receiver.received
               if notification_type(r["body"]) == "event-notification"}
    assert len(by_path["empty"]["entry"]) == 1 and focus_refs(by_path["empty"]) == []
    assert param(status_of(by_path["empty"]), "topic") is None
    assert focus_refs(by_path["id-only"]) == [f"http://testserver/fhir/ImagingStudy/{mine}/_history/1"]
    assert "resource" not in by_path["id-only"]["entry"][1]
    assert by_path["full-resource"]["entry"][1]["resource"]["subject"]["reference"] == "Patient/p1"
    assert all(event_numbers(b) in ([1], []) for b in by_path.values())


def test_report_final_once_and_status_filter(client, worker, receiver):  # noqa: ANN001
    _patient(client, "p1")
    sid = _create(client, subscription(REPORT_TOPIC, receiver.url, filters=["DiagnosticReport?subject=Patient/p1"]))
    _active(client, sid)
    rep = {"resourceType": "DiagnosticReport", "status": "preliminary", "code": {"text": "CBCT"},
           "subject": {"reference": "Patient/p1"}}
    rid = json.loads(client.post("/fhir/DiagnosticReport", json=rep, headers=JSON).data)["id"]
    client.put(f"/fhir/DiagnosticReport/{rid}", json={**rep, "id": rid, "status": "final"}, headers=JSON)
    client.put(f"/fhir/DiagnosticReport/{rid}", json={**rep, "id": rid, "status": "final",
                                                       "conclusion": "typo fixed"}, headers=JSON)
    note = wait_for(receiver.events)[0]
    assert note["entry"][1]["resource"]["status"] == "final"
    # the later edit of a final report is not "becoming final"; a report created final is
    rid2 = json.loads(client.post("/fhir/DiagnosticReport", json={**rep, "status": "final"}, headers=JSON).data)["id"]
    wait_for(lambda: len(receiver.events()) == 2)
    assert receiver.events()[1]["entry"][1]["resource"]["id"] == rid2
    assert event_numbers(receiver.events()[1]) == [2]


def test_appointment_booked_and_cancelled(client, worker, receiver):  # noqa: ANN001
    _patient(client, "p1")
    sid = _create(client, subscription(APPOINTMENT_TOPIC, receiver.url, filters=["Appointment?patient=p1"]))
    _active(client, sid)
    appt = {"resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]}
    aid = json.loads(client.post("/fhir/Appointment", json=appt, headers=JSON).data)["id"]
    client.put(f"/fhir/Appointment/{aid}", json={**appt, "id": aid, "status": "booked"}, headers=JSON)
    client.put(f"/fhir/Appointment/{aid}", json={**appt, "id": aid, "status": "cancelled"}, headers=JSON)
    wait_for(lambda: len(receiver.events()) == 2)
    assert [b["entry"][1]["resource"]["status"] for b in receiver.events()] == ["booked", "cancelled"]
    assert [event_numbers(b) for b in receiver.events()] == [[1], [2]]


def test_status_and_events_operations(client, worker, receiver):  # noqa: ANN001
    _patient(client, "p1")
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url, content="id-only"))
    _active(client, sid)
    for uid in ("1.2.1", "1.2.2", "1.2.3"):
        client.post("/fhir/ImagingStudy", json=study("p1", uid), headers=JSON)
    wait_for(lambda: len(receiver.events()) == 3)
    st = json.loads(client.get(f"/fhir/Subscription/{sid}/$status", headers=JSON).data)
    params = st["entry"][0]["resource"]
    assert st["type"] == "searchset" and param(params, "type") == "query-status"
    assert param(params, "status") == "active" and param(params, "events-since-subscription-start") == "3"
    ev = json.loads(client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=2&content=full-resource",
                               headers=JSON).data)
    assert ev["type"] == "history" and param(status_of(ev), "type") == "query-event"
    assert event_numbers(ev) == [2, 3]
    assert all("resource" in e for e in ev["entry"][1:])
    assert client.get("/fhir/Subscription/nope/$status", headers=JSON).status_code == 404
    assert client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=x", headers=JSON).status_code == 400
    assert client.get("/fhir/Patient/p1/$status", headers=JSON).status_code == 400


def test_failing_endpoint_is_retried_then_error(client, worker, receiver):  # noqa: ANN001
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url))
    _active(client, sid)
    receiver.status = 500
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    body = wait_for(lambda: (lambda b: b if b["status"] == "error" else None)(
        json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)))
    assert len(receiver.events()) == 3  # subscription_attempts POSTs of the same notification
    assert {tuple(event_numbers(b)) for b in receiver.events()} == {(1,)}
    assert "500" in body["error"]
    st = json.loads(client.get(f"/fhir/Subscription/{sid}/$status", headers=JSON).data)
    assert param(st["entry"][0]["resource"], "status") == "error"


def test_failed_handshake_is_error(client, worker, receiver):  # noqa: ANN001
    receiver.status = 404
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url))
    wait_for(lambda: json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)["status"] == "error")
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    assert receiver.events() == []


def test_delete_stops_delivery(client, worker, receiver, repo):  # noqa: ANN001
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url))
    _active(client, sid)
    receiver.status = 500  # the first event waits in its retries
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    wait_for(receiver.events)
    assert client.delete(f"/fhir/Subscription/{sid}", headers=JSON).status_code in (200, 204)
    receiver.status = 200
    seen = len(receiver.received)
    client.post("/fhir/ImagingStudy", json=study(None, "1.2.8"), headers=JSON)
    worker.wake()
    import time

    time.sleep(1.5)  # retries were 0.2 s apart: any further POST would have come by now
    assert len(receiver.received) == seen
    with repo.engine.connect() as c:  # nobody listens: the study left no event behind
        assert c.execute(select(func.count()).select_from(subscription_event)
                         .where(subscription_event.c.dispatched.is_(False))).scalar_one() == 0


def test_no_event_for_a_rolled_back_transaction(client, worker, receiver, repo):  # noqa: ANN001
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url))
    _active(client, sid)
    with repo.engine.connect() as c:
        before = c.execute(select(func.count()).select_from(subscription_event)).scalar_one()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": study(None, "1.2.77"), "request": {"method": "POST", "url": "ImagingStudy"}},
        {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
         "request": {"method": "POST", "url": "Patient"}}]}
    r = client.post("/fhir", json=bundle, headers=JSON)
    assert r.status_code >= 400
    with repo.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(subscription_event)).scalar_one() == before
    assert json.loads(client.get("/fhir/ImagingStudy", headers=JSON).data)["total"] == 0
    client.post("/fhir/ImagingStudy", json=study(None, "1.2.78"), headers=JSON)  # the next one is event 1
    note = wait_for(receiver.events)[0]
    assert event_numbers(note) == [1]
    assert len(receiver.events()) == 1


def test_heartbeat(client, worker, receiver):  # noqa: ANN001
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url, heartbeat=1))
    _active(client, sid)
    hb = wait_for(lambda: receiver.bundles("heartbeat"))[0]
    assert param(status_of(hb), "events-since-subscription-start") == "0"
    assert len(hb["entry"]) == 1


def test_off_and_ended_subscriptions_are_not_notified(client, worker, receiver):  # noqa: ANN001
    off = _create(client, subscription(STUDY_TOPIC, receiver.url + "/off", status="off"))
    ended = _create(client, {**subscription(STUDY_TOPIC, receiver.url + "/ended"), "end": "2020-01-01T00:00:00Z"})
    live = _create(client, subscription(STUDY_TOPIC, receiver.url + "/live"))
    _active(client, live)
    _active(client, ended)
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    wait_for(receiver.events)
    told = [r["path"] for r in receiver.received if notification_type(r["body"]) == "event-notification"]
    assert told == ["/hook/live"]
    assert not any(r["path"] == "/hook/off" for r in receiver.received)
    assert json.loads(client.get(f"/fhir/Subscription/{off}", headers=JSON).data)["status"] == "off"


def test_update_moves_the_endpoint_after_a_new_handshake(client, worker, receiver):  # noqa: ANN001
    sid = _create(client, subscription(STUDY_TOPIC, receiver.url + "/old"))
    _active(client, sid)
    body = json.loads(client.get(f"/fhir/Subscription/{sid}", headers=JSON).data)
    body["channel"]["endpoint"] = receiver.url + "/new"
    body["status"] = "requested"
    assert client.put(f"/fhir/Subscription/{sid}", json=body, headers=JSON).status_code == 200
    wait_for(lambda: [r for r in receiver.received if r["path"] == "/hook/new"])
    _active(client, sid)
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    note = wait_for(lambda: [r for r in receiver.received if r["path"] == "/hook/new"
                             and notification_type(r["body"]) == "event-notification"])[0]
    assert event_numbers(note["body"]) == [1]
    assert not [r for r in receiver.received if r["path"] == "/hook/old"
                and notification_type(r["body"]) == "event-notification"]


def test_criteria_based_subscription_is_kept_as_written_but_never_notified(client, worker, receiver):  # noqa: ANN001
    classic = {"resourceType": "Subscription", "status": "requested", "reason": "classic R4",
               "criteria": "ImagingStudy?patient=Patient/p0",
               "channel": {"type": "rest-hook", "endpoint": receiver.url + "/classic",
                           "payload": "application/fhir+json"}}
    cid = _create(client, classic)
    live = _create(client, subscription(STUDY_TOPIC, receiver.url + "/live"))
    _active(client, live)
    client.post("/fhir/ImagingStudy", json=study(None), headers=JSON)
    wait_for(receiver.events)
    assert not [r for r in receiver.received if r["path"] == "/hook/classic"]
    stored = json.loads(client.get(f"/fhir/Subscription/{cid}", headers=JSON).data)
    assert stored["status"] == "requested" and stored["criteria"] == classic["criteria"]
    assert client.get(f"/fhir/Subscription/{cid}/$status", headers=JSON).status_code == 404
