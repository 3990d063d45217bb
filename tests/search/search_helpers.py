"""Helpers of the search tests: write a resource as given, run a search that must succeed."""
from __future__ import annotations

import json
from typing import Any

from tests.conftest import fhir_json

JSON = {"Content-Type": "application/fhir+json"}


def put(client: Any, body: dict) -> None:
    """Store `body` under its own type and id (create or update)."""
    r = client.put(f"/fhir/{body['resourceType']}/{body['id']}", data=json.dumps(body), headers=JSON)
    assert r.status_code in (200, 201), r.data


def search(client: Any, query: str) -> dict:
    """The Bundle of `GET /fhir/<query>` (which must answer 200)."""
    r = client.get(f"/fhir/{query}")
    assert r.status_code == 200, r.data
    return fhir_json(r)
