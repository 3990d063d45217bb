"""Subscriptions are narrowed by their owner's access: each subscriber is told only of data it
could read itself (patients, guardians' children, staff of the patient's organization)."""
from __future__ import annotations

import json

from subs_helpers import STUDY_TOPIC, Receiver, event_numbers, focus_refs, study, subscription, wait_for


def _subscribe(world, who, endpoint, filters=()):  # noqa: ANN001, ANN202
    r = world.post(who, "Subscription", subscription(STUDY_TOPIC, endpoint, filters=list(filters)))
    assert r.status_code == 201, r.get_data(as_text=True)
    sid = json.loads(r.data)["id"]
    wait_for(lambda: json.loads(world.admin_get(f"Subscription/{sid}").data)["status"] == "active")
    return sid


def _study(world, pid, uid):  # noqa: ANN001, ANN202
    r = world.open.post("/fhir/ImagingStudy", json=study(pid, uid), headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 201
    return json.loads(r.data)["id"]


def test_each_subscriber_hears_only_of_what_it_may_read(world, worker):  # noqa: ANN001
    receivers = {who: Receiver() for who in ("A", "B", "B-peek", "S1", "S2", "SYS2")}
    try:
        for who, r in receivers.items():
            _subscribe(world, who.split("-")[0], r.url, ["ImagingStudy?patient=Patient/pa"] if who == "B-peek" else ())
        a_study = _study(world, "pa", "1.9.1")
        b_study = _study(world, "pb", "1.9.2")
        last = _study(world, "pb", "1.9.3")  # once its notifications are in, every earlier one is
        wait_for(lambda: len(receivers["B"].events()) == 2 and len(receivers["S2"].events()) == 2
                 and len(receivers["SYS2"].events()) == 2 and len(receivers["A"].events()) == 1
                 and len(receivers["S1"].events()) == 1)

        def focus(who: str) -> set[str]:
            return {f.split("/")[-3] for b in receivers[who].events() for f in focus_refs(b)}

        # the caller's own data first: each one hears of its patients' studies
        assert focus("A") == {a_study} and focus("S1") == {a_study}
        assert focus("B") == {b_study, last} and focus("S2") == {b_study, last} and focus("SYS2") == {b_study, last}
        assert [event_numbers(b) for b in receivers["B"].events()] == [[1], [2]]  # no gaps for others' events
        # another patient filtering on A's record, and nobody hears of the other organization's data
        assert receivers["B-peek"].events() == []
    finally:
        for r in receivers.values():
            r.close()


def _sub_world(world, receiver):  # noqa: ANN001, ANN202
    return {who: _subscribe(world, who, receiver.url) for who in ("A", "S1")}


def test_a_subscription_is_its_writers_alone(world, worker):  # noqa: ANN001
    """Read, $status, $events, search, update and delete of a Subscription: its writer may, another
    patient and another organization's staff get 404/403 (its endpoint and header secrets stay hidden)."""
    receiver = Receiver()
    try:
        subs = _sub_world(world, receiver)
        _study(world, "pa", "1.9.5")
        wait_for(lambda: len(receiver.events()) == 2)
        for owner, others in (("A", ("B", "S2")), ("S1", ("B", "S2", "SYS2"))):
            sid = subs[owner]
            # the caller's own subscription first
            assert world.get(owner, f"Subscription/{sid}").status_code == 200
            assert world.get(owner, f"Subscription/{sid}/$status").status_code == 200
            ev = json.loads(world.get(owner, f"Subscription/{sid}/$events").data)
            assert event_numbers(ev) == [1]
            assert {e["resource"]["id"] for e in json.loads(world.get(owner, "Subscription").data)["entry"]} == {sid}
            for other in others:
                for path in (f"Subscription/{sid}", f"Subscription/{sid}/$status", f"Subscription/{sid}/$events"):
                    r = world.get(other, path)
                    assert r.status_code == 404, (other, path, r.get_data(as_text=True))
                assert json.loads(world.get(other, "Subscription").data)["total"] == 0
                body = json.loads(world.get(owner, f"Subscription/{sid}").data)
                body["channel"]["endpoint"] = "http://127.0.0.1:9/stolen"
                assert world.put(other, f"Subscription/{sid}", body).status_code in (403, 404)
                world.delete(other, f"Subscription/{sid}")
                assert world.get(owner, f"Subscription/{sid}").status_code == 200
                assert json.loads(world.get(owner, f"Subscription/{sid}").data)["channel"]["endpoint"] == receiver.url
    finally:
        receiver.close()


def test_patient_sees_only_its_own_events_in_events(world, worker):  # noqa: ANN001
    receiver = Receiver()
    try:
        sid = _subscribe(world, "B", receiver.url)
        _study(world, "pa", "1.9.6")
        _study(world, "pb", "1.9.7")
        wait_for(lambda: len(receiver.events()) == 1)
        ev = json.loads(world.get("B", f"Subscription/{sid}/$events?content=full-resource").data)
        assert event_numbers(ev) == [1]
        assert [e["resource"]["subject"]["reference"] for e in ev["entry"][1:]] == ["Patient/pb"]
    finally:
        receiver.close()
