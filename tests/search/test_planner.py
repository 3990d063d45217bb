"""The search planner's behaviour: answers independent of predicate order, date bounds on one
row for single-valued dates (exact) and per row for repeating ones, `_total` as the spec says,
and planner statistics refreshed after bulk writes."""
from __future__ import annotations

import itertools
import json
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from fhirserver.search.planner import combine, bound, single_valued
from tests.conftest import fhir_json
from tests.search.search_helpers import JSON, put, search


def ids(bundle: dict) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


PATIENTS = [  # (id, birthDate, gender, family)
    ("b1969", "1969-12-31", "female", "Alvarez"),
    ("b1970", "1970", "male", "Alvarez"),           # a partial date: the whole year
    ("b197003", "1970-03", "female", "Alvarez"),    # a partial date: the whole month
    ("b19700315", "1970-03-15", "female", "Baker"),
    ("b19700401", "1970-04-01", "male", "Alvarez"),
    ("b1971", "1971-01-01", "female", "Alvarez"),
]


@pytest.fixture()
def people(client):  # noqa: ANN001, ANN201
    for pid, born, gender, family in PATIENTS:
        put(client, {"resourceType": "Patient", "id": pid, "birthDate": born, "gender": gender,
                     "name": [{"family": family}]})
    return client


@pytest.mark.parametrize("query,expected", [
    # eq: the value's range lies within the parameter's range
    ("birthdate=1970", ["b1970", "b197003", "b19700315", "b19700401"]),
    ("birthdate=1970-03", ["b197003", "b19700315"]),
    ("birthdate=1970-03-15", ["b19700315"]),
    # ge / le: the ranges overlap from the bound on (partial dates reach over it)
    ("birthdate=ge1970-03-15", ["b1970", "b197003", "b19700315", "b19700401", "b1971"]),
    ("birthdate=le1970-03-15", ["b1969", "b1970", "b197003", "b19700315"]),
    ("birthdate=gt1970-03-31", ["b1970", "b19700401", "b1971"]),
    ("birthdate=lt1970-01-01", ["b1969"]),
    # two bounds: a window; a year-long value overlapping it matches, one beside it does not
    ("birthdate=ge1970-03-10&birthdate=lt1970-03-20", ["b1970", "b197003", "b19700315"]),
    ("birthdate=ge1970-04-01&birthdate=le1970-12-31", ["b1970", "b19700401"]),
    # bounds whose window is empty: only a value spanning both ends meets both
    ("birthdate=ge1970-06-01&birthdate=le1970-02-01", ["b1970"]),
    ("birthdate=sa1970-03-31", ["b19700401", "b1971"]),
    ("birthdate=eb1970-01-01", ["b1969"]),
    ("birthdate=ne1970", ["b1969", "b1971"]),
    ("birthdate=1969,1971", ["b1969", "b1971"]),
    ("birthdate=ge1970-03-01,lt1969-12-31&birthdate=le1970-03-31",
     ["b1970", "b197003", "b19700315"]),
])
def test_birthdate_ranges(people, query: str, expected: list[str]) -> None:  # noqa: ANN001
    assert ids(search(people, "Patient?" + query)) == expected


def test_answers_do_not_depend_on_the_order_of_the_parameters(people) -> None:  # noqa: ANN001
    params = ["birthdate=ge1970-01-01", "birthdate=lt1970-12-31", "gender=female", "name=alva", "_id:not=b1971"]
    answers = {tuple(ids(search(people, "Patient?" + "&".join(order))))
               for order in itertools.permutations(params)}
    assert answers == {("b197003",)}


def test_a_repeating_date_keeps_per_value_semantics(client) -> None:  # noqa: ANN001
    """Observation.effective may be a Timing (several values): each bound may be met by another
    value, so they are not folded onto one row."""
    assert not single_valued("Observation", "Observation.effective")
    assert single_valued("Patient", "Patient.birthDate")
    put(client, {"resourceType": "Patient", "id": "pt"})
    put(client, {"resourceType": "Observation", "id": "timed", "status": "final", "code": {"text": "x"},
                 "subject": {"reference": "Patient/pt"},
                 "effectiveTiming": {"event": ["2020-01-05", "2020-06-05"]}})
    found = search(client, "Observation?date=ge2020-06-01&date=le2020-01-10")
    assert ids(found) == ["timed"]  # one event meets each bound
    # neither event lies in the window, yet each bound has its event: per-value semantics
    assert ids(search(client, "Observation?date=ge2020-02-01&date=le2020-05-31")) == ["timed"]
    assert ids(search(client, "Observation?date=ge2020-07-01&date=le2020-12-31")) == []


def test_bounds_fold_into_one_window_only_when_it_is_not_empty() -> None:
    folded = combine([bound("ge1980-03-01"), bound("lt1980-03-08")])
    assert len(folded) == 1 and folded[0].kind == "overlap"
    assert len(combine([bound("ge1990"), bound("le1980")])) == 2


@pytest.fixture()
def many(client):  # noqa: ANN001, ANN201
    for i in range(7):
        put(client, {"resourceType": "Patient", "id": f"m{i}", "gender": "female" if i % 2 else "male",
                     "name": [{"family": "Many"}]})
    return client


def test_total_accurate_is_the_default_and_counts_beyond_the_page(many) -> None:  # noqa: ANN001
    assert search(many, "Patient?name=many&_count=3")["total"] == 7
    assert search(many, "Patient?name=many&_count=3&_total=accurate")["total"] == 7
    assert search(many, "Patient?name=many&_count=50")["total"] == 7  # the page holds them all
    assert search(many, "Patient?name=nobody")["total"] == 0


def test_total_on_later_pages_is_the_whole_result(many) -> None:  # noqa: ANN001
    page = search(many, "Patient?name=many&_count=3")
    seen, totals = ids(page), [page["total"]]
    while (nxt := next((l["url"] for l in page["link"] if l["relation"] == "next"), None)):
        parts = urlsplit(nxt)
        page = fhir_json(many.get(parts.path + "?" + parts.query))
        seen += ids(page)
        totals.append(page["total"])
    assert sorted(seen) == [f"m{i}" for i in range(7)] and set(totals) == {7}


def test_total_none_leaves_total_out(many) -> None:  # noqa: ANN001
    bundle = search(many, "Patient?name=many&_count=3&_total=none")
    assert "total" not in bundle and len(bundle["entry"]) == 3
    assert "_total=none" in next(l["url"] for l in bundle["link"] if l["relation"] == "next")


def test_total_estimate_gives_a_number(many, is_postgres: bool) -> None:  # noqa: ANN001
    bundle = search(many, "Patient?name=many&_count=3&_total=estimate")
    assert isinstance(bundle["total"], int) and bundle["total"] >= 4  # at least what was seen
    if not is_postgres:
        assert bundle["total"] == 7  # no planner estimates: SQLite counts
    assert search(many, "Patient?name=many&_total=estimate")["total"] == 7  # one page: exact
    assert search(many, "Patient?name=many&_summary=count&_total=estimate")["total"] >= 1


def test_summary_count_with_totals(many) -> None:  # noqa: ANN001
    bundle = search(many, "Patient?gender=female&_summary=count")
    assert bundle["total"] == 3 and "entry" not in bundle


def test_bad_total_is_a_400(many) -> None:  # noqa: ANN001
    r = many.get("/fhir/Patient?_total=exact")
    assert r.status_code == 400 and fhir_json(r)["resourceType"] == "OperationOutcome"


# -- statistics after bulk writes ----------------------------------------------------------------
def _last_analyze(repo, table: str):  # noqa: ANN001, ANN202
    with repo.engine.connect() as c:
        return c.execute(text("SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
                              "WHERE relname = :t"), {"t": table}).scalar()


def test_reindex_refreshes_the_statistics(client, repo, is_postgres: bool) -> None:  # noqa: ANN001
    if not is_postgres:
        pytest.skip("pg_stat_user_tables is PostgreSQL's")
    put(client, {"resourceType": "Patient", "id": "r1", "name": [{"family": "Re"}]})
    before = _last_analyze(repo, "idx_string")
    r = client.get("/fhir/$reindex")
    assert r.status_code == 200, r.data
    after = _last_analyze(repo, "idx_string")
    assert after is not None and (before is None or after > before)


def test_a_bulk_bundle_refreshes_stale_statistics(client, repo, is_postgres: bool) -> None:  # noqa: ANN001
    if not is_postgres:
        pytest.skip("pg_stat_user_tables is PostgreSQL's")
    from fhirserver.storage import statistics

    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("ANALYZE resource")
    before = _last_analyze(repo, "resource")
    n = statistics.STALE_ROWS + 300
    entries = [{"resource": {"resourceType": "Patient", "name": [{"family": f"Bulk{i}"}]},
                "request": {"method": "POST", "url": "Patient"}} for i in range(n)]
    for i in range(0, n, 500):
        r = client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "batch",
                                                   "entry": entries[i:i + 500]}), headers=JSON)
        assert r.status_code == 200, r.data[:300]
    after = _last_analyze(repo, "resource")
    assert after is not None and after > before
    assert statistics.stale_tables(repo.engine) == [] or "resource" not in statistics.stale_tables(repo.engine)


def test_fhirserver_load_analyzes_after_loading(settings, tmp_path, is_postgres: bool) -> None:  # noqa: ANN001
    """`fhirserver load` straight into the database leaves fresh statistics behind."""
    if not is_postgres:
        pytest.skip("pg_stat_user_tables is PostgreSQL's")
    import argparse

    from fhirserver.load import run_load
    from fhirserver.storage import make_engine

    f = tmp_path / "patients.ndjson"
    f.write_text("".join(json.dumps({"resourceType": "Patient", "id": f"ld{i}"}) + "\n" for i in range(5)))
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.connect() as c:
            before = c.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'idx_token'")).scalar()
        args = argparse.Namespace(files=[f], url=None, token=None, client_id=None, client_secret=None,
                                  scope="system/*.cruds", stop_on_error=False, forget_journal=True,
                                  batch_size=500, no_progress=True)
        assert run_load(args, settings) == 0
        with engine.connect() as c:
            after = c.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'idx_token'")).scalar()
    finally:
        engine.dispose()
    assert after is not None and (before is None or after > before)
