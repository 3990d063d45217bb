"""The server's own endpoints in /openapi.json come from flask-smorest/apispec over the app's URL
map, merged with the CapabilityStatement-generated FHIR part: every own route is there, nothing
is documented that the app does not route, and response bodies have schemas."""
from __future__ import annotations

import re

from werkzeug.exceptions import MethodNotAllowed, NotFound

OWN_PREFIXES = ("/auth", "/dicomweb", "/healthz", "/readyz", "/metrics", "/.well-known")


def _doc(client) -> dict:  # noqa: ANN001
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json


def test_own_endpoints_have_schemas_and_open_ones_no_security(client) -> None:  # noqa: ANN001
    doc = _doc(client)
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    token = paths["/auth/token"]["post"]
    assert token["responses"]["200"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/TokenResponse"}
    assert "access_token" in schemas["TokenResponse"]["properties"]
    assert token["security"] == []  # the token endpoint takes client credentials, not a bearer token
    assert schemas["Ready"]["required"] == ["checks", "status"] or set(schemas["Ready"]["required"]) == \
        {"checks", "status"}
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert {"get", "post"} <= set(paths["/dicomweb/studies"])
    assert "security" not in paths["/dicomweb/studies"]["get"]  # DICOMweb takes the bearer token
    frame = paths["/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered"]
    assert {p["name"] for p in frame["parameters"]} == {"study", "series", "sop", "frame"}
    assert "/fhir/DiagnosticReport/{id}/$render" in paths  # an operation the CapabilityStatement omits
    assert "/fhir/Patient/{id}/$everything" in paths  # ... and one it lists (FHIR part)
    assert {"/fhir/Patient", "/fhir/metadata"} <= set(paths)


def test_every_own_route_is_documented(app, client) -> None:  # noqa: ANN001
    doc = _doc(client)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(OWN_PREFIXES) or rule.endpoint.startswith("dicomweb.unknown") or \
                rule.endpoint.endswith("preflight"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)


def test_nothing_documented_that_is_not_routed(app, client) -> None:  # noqa: ANN001
    doc = _doc(client)
    adapter = app.url_map.bind("testserver")
    for path, ops in doc["paths"].items():
        if not path.startswith(OWN_PREFIXES):
            continue
        concrete = re.sub(r"\{[a-z_]+\}", "1.2.3", path.replace("{frame}", "1"))
        for method in ops:
            if method == "parameters":
                continue
            try:
                endpoint, _ = adapter.match(concrete, method=method.upper())
            except (NotFound, MethodNotAllowed):
                raise AssertionError(f"{method.upper()} {path} is documented but not routed") from None
            assert not endpoint.startswith("dicomweb.unknown"), (path, method)
