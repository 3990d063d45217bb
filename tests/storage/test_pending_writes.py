"""Index rows held back until the transaction writes them (storage.pending): after several writes
of one resource in one transaction, the database holds exactly the rows of its last version, and a
deletion keeps only the compartment rows (SQLite, or PostgreSQL with FHIRSERVER_TEST_DATABASE_URL)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from fhirserver.search.paths import _fhirpathpy, compile_path
from fhirserver.storage.pending import INDEX_TABLES


def _patient(family: str, gp: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}],
            "gender": "female", "birthDate": "1970-01-02",
            "identifier": [{"system": "urn:test:mrn", "value": family}],
            "generalPractitioner": [{"reference": f"Practitioner/{gp}"}]}


def _rows(repo: Any, pk: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row of `pk` (without res_pk), sorted, per table."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with repo.engine.connect() as conn:
        for name, table in INDEX_TABLES.items():
            cols = [c for c in table.columns if c.name != "res_pk"]
            rows = conn.execute(select(*cols).where(table.c.res_pk == pk)).all()
            if rows:
                out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _fresh(repo: Any, body: dict[str, Any]) -> tuple[dict[str, list[tuple[Any, ...]]], str]:
    """The rows one create of `body` writes (the reference for replaced rows), and its id."""
    with repo.transaction(write=True) as tx:
        stored = tx.create("Patient", body)
    return _rows(repo, stored.pk), stored.res_id


def _without_ids(rows: dict[str, list[tuple[Any, ...]]], *ids: str) -> dict[str, list[tuple[Any, ...]]]:
    return {k: sorted((tuple("<id>" if v in ids else v for v in r) for r in vs), key=repr) for k, vs in rows.items()}


def test_create_then_updates_in_one_transaction_leave_the_last_versions_rows_only(repo) -> None:  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        first = tx.create("Patient", _patient("Old", "p1"))
        tx.update("Patient", first.res_id, {**_patient("Middle", "p2"), "id": first.res_id})
        last, _ = tx.update("Patient", first.res_id, {**_patient("New", "p3"), "id": first.res_id})
    assert last.version_id == 3
    got = _rows(repo, first.pk)
    assert ("Practitioner", "p1") not in got["compartment"] and ("Practitioner", "p2") not in got["compartment"]
    assert not any("old" in repr(r) or "middle" in repr(r) for r in got["string"])
    ref, ref_id = _fresh(repo, _patient("New", "p3"))
    assert _without_ids(got, first.res_id) == _without_ids(ref, ref_id)
    assert {"string", "token", "reference", "date", "text", "compartment"} <= set(got)


def test_update_in_a_later_transaction_replaces_rows_without_duplicates(repo) -> None:  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        s = tx.create("Patient", _patient("Same", "p1"))
    before = _rows(repo, s.pk)
    for _ in range(2):  # identical content: the same rows, not twice as many
        with repo.transaction(write=True) as tx:
            tx.update("Patient", s.res_id, {**_patient("Same", "p1"), "id": s.res_id})
    assert _rows(repo, s.pk) == before
    with repo.transaction(write=True) as tx:
        tx.update("Patient", s.res_id, {**_patient("Other", "p9"), "id": s.res_id})
    after = _rows(repo, s.pk)
    assert after != before and ("Practitioner", "p9") in after["compartment"] and len(after["compartment"]) == 2
    assert len(after["text"]) == 1


def test_deletion_keeps_compartments_only_even_in_the_creating_transaction(repo) -> None:  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        a = tx.create("Patient", _patient("Gone", "p1"))
        tx.delete("Patient", a.res_id)
    with repo.transaction(write=True) as tx:
        b = tx.create("Patient", _patient("Later", "p2"))
    with repo.transaction(write=True) as tx:
        tx.update("Patient", b.res_id, {**_patient("Later", "p3"), "id": b.res_id})
        tx.delete("Patient", b.res_id)
    for stored, gp in ((a, "p1"), (b, "p3")):
        rows = _rows(repo, stored.pk)
        assert set(rows) == {"compartment"}
        assert ("Practitioner", gp) in rows["compartment"] and ("Patient", stored.res_id) in rows["compartment"]


def test_deceased_is_extracted_as_fhirpath_evaluates_it() -> None:
    expr = "Patient.deceased.exists() and Patient.deceased != false"
    fast, is_fast = compile_path(expr)
    slow = _fhirpathpy(expr)
    assert is_fast
    for extra in ({}, {"deceasedBoolean": False}, {"deceasedBoolean": True},
                  {"deceasedDateTime": "2020-01-01"}):
        body = {"resourceType": "Patient", **extra}
        assert fast(body) == slow(body), extra


# -- resource rows held back (PostgreSQL: a create under a server-made id) ------------------------

def test_every_statement_of_the_transaction_sees_the_resources_it_created(repo) -> None:  # noqa: ANN001
    """Created then read, searched, updated, deleted and counted in the same transaction, by
    the repository's own reads and by a statement a caller sends on `tx.conn`."""
    from sqlalchemy import func

    from fhirserver.storage import resource

    with repo.transaction(write=True) as tx:
        a = tx.create("Patient", _patient("Heldback", "gp-1"))
        b = tx.create("Patient", _patient("Heldtwo", "gp-1"))
        n = tx.conn.execute(select(func.count()).select_from(resource).where(
            resource.c.pk.in_([a.pk, b.pk]))).scalar_one()
        assert n == 2
        assert tx.current("Patient", a.res_id).pk == a.pk
        body = _patient("Heldback", "gp-2")
        updated, created = tx.update("Patient", a.res_id, {**body, "id": a.res_id})
        assert (updated.version_id, created) == (2, False)
        tx.delete("Patient", b.res_id)
        c = tx.create("Patient", _patient("Heldthree", "gp-3"))
    with repo.transaction() as tx:
        assert tx.current("Patient", a.res_id).version_id == 2
        assert tx.current("Patient", b.res_id).deleted
        assert tx.current("Patient", c.res_id).pk == c.pk
        assert [v.version_id for v in tx.history("Patient", a.res_id)[0]] == [2, 1]
    ref, ref_id = _fresh(repo, body)
    assert _without_ids(_rows(repo, a.pk), a.res_id) == _without_ids(ref, ref_id)  # the last version's rows only


def test_a_rolled_back_transaction_writes_none_of_its_held_rows(repo) -> None:  # noqa: ANN001
    created = []
    try:
        with repo.transaction(write=True) as tx:
            created.append(tx.create("Patient", _patient("Neverstored", "gp-1")))
            raise RuntimeError("the Bundle's next entry failed")
    except RuntimeError:
        pass
    with repo.transaction() as tx:
        assert tx.current("Patient", created[0].res_id) is None
    assert _rows(repo, created[0].pk) == {}


def test_a_bundle_sized_transaction_draws_distinct_keys_in_a_few_round_trips(repo) -> None:  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        stored = [tx.create("Observation", {"resourceType": "Observation", "status": "final",
                                            "code": {"text": f"held {i}"}}) for i in range(300)]
    pks = [s.pk for s in stored]
    assert len(set(pks)) == 300
    with repo.transaction() as tx:
        assert [s.res_id for s in tx.by_pks(pks)] == [s.res_id for s in stored]
