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
        subs = {who: _subscribe(world, who.split("-")[0], r.url,
                                ["ImagingStudy?patient=Patient/pa"] if who == "B-peek" else ())
                for who, r in receivers.items()}
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
        # $events as the subscriber: only what it may read
        ev = json.loads(world.get("B", f"Subscription/{subs['B']}/$events").data)
        assert event_numbers(ev) == [1, 2]
        peek = json.loads(world.get("B", f"Subscription/{subs['A']}/$events?content=full-resource").data)
        assert event_numbers(peek) == [] and len(peek["entry"]) == 1
    finally:
        for r in receivers.values():
            r.close()
