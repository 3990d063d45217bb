"""The trail's own AuditEvents: index rows read off their shape equal the generic extraction's.

fhirserver.audit_rows skips the generic extraction for the events the trail builds itself; this
is its proof, over varied records (patients 0..n, references of several types, query or not,
remote or not, client-only agents, patient agents, odd strings), on the bodies exactly as they
are stored (stamped, with the request-id entity).
"""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from fhirserver import audit_rows
from fhirserver.audit import _event, tag_request
from fhirserver.search import SearchEngine, base_registry
from fhirserver.storage import now_utc, stamp

BASE = "http://localhost:8080/fhir"
WHO = [{"reference": "Practitioner/dr-1", "client_id": "app"}, {"reference": "Patient/p1", "client_id": "portal"},
       {"reference": None, "client_id": "backend"}, {"reference": None, "client_id": None},
       {"reference": "Device/d.9", "client_id": "dev"}, {"reference": "RelatedPerson/rp", "client_id": "Ünï App"},
       {"reference": f"{BASE}/Practitioner/abs", "client_id": "x"},  # absolute: the generic path
       {"reference": "https://other.example/fhir/Patient/q", "client_id": "y"}]
REFS = [[], ["Patient/p1"], ["Patient/p1", "Observation/o1", "Condition/c-2"], ["Observation/o1"],
        ["Patient/p2", "Patient/p3", "Encounter/e1", "Patient/gone"], ["Practitioner/dr-1", "Device/d.9"],
        ["metadata"], ["Patient/p1/_history/2"]]
OWNERS = {"Patient/p1": {"p1"}, "Observation/o1": {"p1", "p2"}, "Condition/c-2": {"p3"}, "Patient/p2": {"p2"},
          "Patient/p3": {"p3"}, "Encounter/e1": {"p2"}}


def _records():
    combos = itertools.product(WHO, REFS, [None, "patient=Patient/p1&_count=5", "name=M%C3%BCller  "],
                               [None, "127.0.0.1", "2001:DB8::1"], [None, "req-1", "Abc.DEF:9"])
    for i, (who, refs, query, remote, rid) in enumerate(combos):
        recorded = datetime(2026, 1 + i % 12, 1 + i % 28, i % 24, i % 60, i % 60, (i * 1000) % 1_000_000,
                            tzinfo=timezone.utc).isoformat(timespec="milliseconds")
        yield {"who": who, "action": "RECUDE"[i % 6], "interaction": ["read", "vread", "search-type"][i % 3],
               "refs": refs, "query": query, "remote": remote, "outcome": "0", "request_id": rid,
               "recorded": recorded}


def test_rows_read_off_the_shape_equal_the_generic_extraction() -> None:
    engine = SearchEngine(BASE)
    fast = fallback = 0
    for it in _records():
        body = stamp(tag_request(_event(it, OWNERS), it["request_id"]), "e-1", 1, now_utc())
        rows = audit_rows.rows(body)
        if rows is None:  # only for references the shape reader leaves to the generic path
            assert it["who"]["reference"] and "://" in it["who"]["reference"] or \
                {"metadata", "Patient/p1/_history/2"} & set(it["refs"])
            fallback += 1
            continue
        assert rows == engine.index_rows("AuditEvent", body), it
        fast += 1
    assert fast > 900 and fallback > 0


def test_only_the_hl7_parameters_take_the_shape_reader() -> None:
    assert audit_rows.standard(base_registry())
    custom = base_registry().with_custom([{
        "resourceType": "SearchParameter", "url": "http://example.org/sp/ae-who", "code": "who-display",
        "base": ["AuditEvent"], "type": "string", "expression": "AuditEvent.agent.who.display", "status": "active"}])
    assert not audit_rows.standard(custom)
    other = base_registry().with_custom([{
        "resourceType": "SearchParameter", "url": "http://example.org/sp/pat", "code": "nick",
        "base": ["Patient"], "type": "string", "expression": "Patient.name.text", "status": "active"}])
    assert audit_rows.standard(other)


@pytest.mark.parametrize("who", WHO[:4])
def test_events_written_by_the_trail_are_found_by_their_parameters(app, who) -> None:  # noqa: ANN001
    """Written through the trail (COPY on PostgreSQL), each event is found by its parameters."""
    from fhirserver import requestid

    services = app.extensions["fhirserver"]
    trail = services.audit
    token = requestid.bind("rows-req-7")
    try:
        trail.record(who=who, action="R", interaction="read", references=["Observation/none"], remote="10.0.0.9")
    finally:
        requestid.unbind(token)
    assert trail.flush() >= 1
    with services.repo.transaction() as tx:
        compiled = services.search.compile("AuditEvent", [("entity-name", "rows-req-7"), ("address", "10.0.0.9"),
                                                           ("subtype", "read"), ("action", "R")],
                                           postgres=tx.postgres, strict=True)
        found, _total, _more, _c = tx.search("AuditEvent", compiled.where, count=50)
    assert found
