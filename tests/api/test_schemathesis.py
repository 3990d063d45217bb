"""A bounded schemathesis run over /openapi.json: generated requests (valid and invalid) against
the documented operations find no server error and no response that breaks its documented schema.

Deterministic (hypothesis derandomized, no example database) and bounded: a few examples per
operation, on the server's own endpoints and the FHIR interactions of a few resource types (the
other types share the same handlers).
"""
from __future__ import annotations

import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from fhirserver.config import Settings
from tests.conftest import app_fixture

TYPES = ("Patient", "Observation", "DiagnosticReport", "ImagingStudy", "Appointment")
OWN = r"^/(auth|dicomweb|healthz|readyz|metrics|\.well-known)"
FHIR = rf"^/fhir(/metadata|/({'|'.join(TYPES)})(/.*)?)?$"
EXAMPLES = 3


@schemathesis.serializer("multipart/related")
def _multipart(_ctx, value) -> bytes:  # noqa: ANN001
    """STOW-RS bodies: whatever bytes were generated (the server must refuse them cleanly)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture()
def api_app(scratch_db, tmp_path, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(Settings(database_url=scratch_db, data_dir=tmp_path / "var", base_url="http://testserver",
                                    insecure_no_auth=True, log_requests=False), open_apps, upgrade_schema=True)


def test_generated_requests_find_no_server_error(api_app) -> None:  # noqa: ANN001
    assert api_app.test_client().post("/fhir/Patient", json={"resourceType": "Patient", "id": "x"}).status_code \
        in (200, 201)  # something to read
    schema = schemathesis.openapi.from_wsgi("/openapi.json", api_app)
    ops = [r.ok() for r in schema.get_all_operations()]
    chosen = [op for op in ops if re.match(OWN, op.path) or re.match(FHIR, op.path)]
    assert len(chosen) >= 60, len(chosen)  # the own endpoints and the chosen types are documented
    failures: list[str] = []
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    for op in chosen:
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case) -> None:  # noqa: ANN001
            response = case.call()
            calls[op.label] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            except Exception as exc:  # noqa: BLE001 - collect every finding, report them together
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{str(exc).strip()[:600]}")

        run()
    total = sum(calls.values())
    print("schemathesis:", len(chosen), "operations,", total, "cases, statuses", dict(statuses))
    assert 150 <= total <= 1000, total
    assert not failures, "\n\n".join(failures[:20])
