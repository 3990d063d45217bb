"""The framework's limit: a bare Flask endpoint answering a fixed FHIR read.

`python -m bench.bare_app --port P --body-file F` serves `GET /fhir/Patient/<id>` with the bytes of
F (one Patient as the server returns it), the same Content-Type, ETag and Last-Modified headers,
through the same gunicorn configuration as `fhirserver serve` (gthread workers, same threads,
timeout and keep-alive, no access log). No database, no FHIR logic: what is left is Flask,
Werkzeug and gunicorn.
"""
from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, Response

from bench import refserve


def create_app(body: bytes, content_type: str, headers: dict[str, str]) -> Flask:
    app = Flask("bare")

    @app.get("/fhir/<res_type>/<res_id>")
    def read(res_type: str, res_id: str) -> Response:  # noqa: ARG001 - fixed answer
        resp = Response(body, status=200, content_type=content_type)
        for k, v in headers.items():
            resp.headers[k] = v
        return resp

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        return Response(b'{"resourceType":"CapabilityStatement"}', content_type=content_type)

    return app


def main(argv: list[str] | None = None) -> int:
    p = refserve.parser("bench.bare_app")
    p.add_argument("--body-file", type=Path, required=True)
    p.add_argument("--content-type", default="application/fhir+json; charset=utf-8")
    p.add_argument("--header", action="append", default=[], help="Name: value (repeatable)")
    args = p.parse_args(argv)
    body = args.body_file.read_bytes()
    headers = dict(h.split(": ", 1) for h in args.header)
    refserve.serve(args, lambda: create_app(body, args.content_type, headers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
