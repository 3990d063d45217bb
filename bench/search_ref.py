"""The search references: each benchmark search as the SQL a person would write by hand,
served over HTTP by a bare Flask app through the server's gunicorn configuration.

Written from the schema (`resource`, the `idx_*` tables, `resource_compartment`), not from the
server's compiler: one statement per search that finds the matches once (a CTE), counts them
for `Bundle.total` and returns the page's stored bodies in a searchset Bundle of the same shape
the server answers (fullUrl, resource, search.mode, total, a self link). No FHIR logic, no
access policy, no validation: what is left is Flask, psycopg and PostgreSQL.

    python -m bench.search_ref --port P --database-url postgresql://...
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from flask import Flask, Response, request

from bench import refserve

BASE = "http://bench/fhir"

# name -> (SQL, parameters taken from the query string). Each returns (total, res_type, res_id,
# body, mode) rows in page order; `total` repeats on every row.
_PAGE = """
SELECT (SELECT count(*) FROM m) AS total, r.res_type, r.res_id, r.body::text, 'match'
FROM (SELECT pk FROM m ORDER BY pk LIMIT %(n)s) page JOIN resource r ON r.pk = page.pk ORDER BY r.pk"""

CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "name": ("""WITH m AS (SELECT DISTINCT s.res_pk AS pk FROM idx_string s JOIN resource r ON r.pk = s.res_pk
        WHERE s.res_type = 'Patient' AND s.param = 'name' AND s.value LIKE %(v)s || '%%' AND NOT r.deleted)""" + _PAGE,
             ("v", "n")),
    "identifier": ("""WITH m AS (SELECT t.res_pk AS pk FROM idx_token t JOIN resource r ON r.pk = t.res_pk
        WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.system = %(s)s AND t.code = %(v)s
        AND NOT r.deleted)""" + _PAGE, ("s", "v", "n")),
    "email": ("""WITH m AS (SELECT t.res_pk AS pk FROM idx_token t JOIN resource r ON r.pk = t.res_pk
        WHERE t.res_type = 'Patient' AND t.param = 'email' AND t.code = %(v)s AND NOT r.deleted)""" + _PAGE,
              ("v", "n")),
    # a birth date is one row per Patient: the window is one row's [low, high) meeting [from, to)
    "birthdate": ("""WITH m AS (SELECT d.res_pk AS pk FROM idx_date d JOIN resource r ON r.pk = d.res_pk
        WHERE d.res_type = 'Patient' AND d.param = 'birthdate' AND d.high > %(a)s::timestamptz
        AND d.low < %(b)s::timestamptz AND NOT r.deleted)""" + _PAGE, ("a", "b", "n")),
    # birthdate=1980: the value lies within the year
    "birthyear": ("""WITH m AS (SELECT d.res_pk AS pk FROM idx_date d JOIN resource r ON r.pk = d.res_pk
        WHERE d.res_type = 'Patient' AND d.param = 'birthdate' AND d.low >= %(a)s::timestamptz
        AND d.high <= %(b)s::timestamptz AND NOT r.deleted)""" + _PAGE, ("a", "b", "n")),
    "report_include": ("""WITH m AS (SELECT f.res_pk AS pk FROM idx_reference f JOIN resource r ON r.pk = f.res_pk
        WHERE f.res_type = 'DiagnosticReport' AND f.param = 'subject' AND f.target_type = 'Patient'
        AND f.target_id = %(p)s AND NOT r.deleted),
        page AS (SELECT pk FROM m ORDER BY pk LIMIT %(n)s)
        SELECT (SELECT count(*) FROM m), r.res_type, r.res_id, r.body::text, 'match'
        FROM page JOIN resource r ON r.pk = page.pk
        UNION ALL
        SELECT (SELECT count(*) FROM m), o.res_type, o.res_id, o.body::text, 'include'
        FROM (SELECT DISTINCT i.target_type, i.target_id FROM page JOIN idx_reference i ON i.res_pk = page.pk
              AND i.param = 'result') t
        JOIN resource o ON o.res_type = t.target_type AND o.res_id = t.target_id AND NOT o.deleted""",
                       ("p", "n")),
    "chain": ("""WITH m AS (SELECT DISTINCT f.res_pk AS pk FROM idx_string s
        JOIN resource p ON p.pk = s.res_pk AND NOT p.deleted
        JOIN idx_reference f ON f.target_type = 'Patient' AND f.target_id = p.res_id
             AND f.res_type = 'DiagnosticReport' AND f.param = 'subject'
        JOIN resource r ON r.pk = f.res_pk AND NOT r.deleted
        WHERE s.res_type = 'Patient' AND s.param = 'name' AND s.value LIKE %(v)s || '%%')""" + _PAGE, ("v", "n")),
    "has": ("""WITH m AS (SELECT DISTINCT p.pk FROM idx_date d
        JOIN resource a ON a.pk = d.res_pk AND NOT a.deleted
        JOIN idx_reference f ON f.res_pk = a.pk AND f.param = 'patient' AND f.target_type = 'Patient'
        JOIN resource p ON p.res_type = 'Patient' AND p.res_id = f.target_id AND NOT p.deleted
        WHERE d.res_type = 'Appointment' AND d.param = 'date' AND d.low >= %(a)s::timestamptz
        AND d.high <= %(b)s::timestamptz)""" + _PAGE, ("a", "b", "n")),
    "observations": ("""WITH m AS (SELECT f.res_pk AS pk FROM idx_reference f
        JOIN idx_token c ON c.res_pk = f.res_pk AND c.param = 'code' AND c.system = %(s)s AND c.code = %(c)s
        JOIN resource r ON r.pk = f.res_pk AND NOT r.deleted
        WHERE f.res_type = 'Observation' AND f.param = 'subject' AND f.target_type = 'Patient'
        AND f.target_id = %(p)s)""" + _PAGE, ("s", "c", "p", "n")),
    # page k of an unfiltered list: the keyset after the last pk of the previous page
    "page": ("""WITH m AS (SELECT pk FROM resource WHERE res_type = 'Patient' AND NOT deleted)
        SELECT (SELECT count(*) FROM m), r.res_type, r.res_id, r.body::text, 'match'
        FROM resource r WHERE r.res_type = 'Patient' AND NOT r.deleted AND r.pk > %(after)s
        ORDER BY r.pk LIMIT %(n)s""", ("after", "n")),
}


def bundle(rows: list[tuple[Any, ...]], self_url: str) -> bytes:
    """A searchset Bundle around stored bodies (no parsing: the bytes are copied)."""
    total = rows[0][0] if rows else 0
    entries = ",".join(f'{{"fullUrl":"{BASE}/{t}/{i}","resource":{body},"search":{{"mode":"{mode}"}}}}'
                       for _total, t, i, body, mode in rows)
    head = f'{{"resourceType":"Bundle","type":"searchset","total":{total},' \
           f'"link":[{{"relation":"self","url":"{self_url}"}}]'
    return (head + (f',"entry":[{entries}]' if rows else "") + "}").encode()


def create_app(database_url: str) -> Flask:
    import psycopg

    app = Flask("search_ref")
    local = threading.local()

    def conn() -> Any:
        c = getattr(local, "conn", None)
        if c is None or c.closed:
            c = local.conn = psycopg.connect(database_url, autocommit=True)
        return c

    @app.get("/ref/<case>")
    def run(case: str) -> Response:
        sql, names = CASES[case]
        params = {k: request.args[k] for k in names}
        for k in ("n", "after"):
            if k in params:
                params[k] = int(params[k])
        with conn().cursor() as cur:
            rows = cur.execute(sql, params).fetchall()  # psycopg prepares repeated statements, as for the server
        return Response(bundle(rows, request.url), content_type="application/fhir+json; charset=utf-8")

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        return Response(b'{"resourceType":"CapabilityStatement"}', content_type="application/fhir+json")

    return app


def main(argv: list[str] | None = None) -> int:
    p = refserve.parser("bench.search_ref")
    p.add_argument("--database-url", required=True)
    args = p.parse_args(argv)
    refserve.serve(args, lambda: create_app(args.database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
