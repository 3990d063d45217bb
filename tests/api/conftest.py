"""Fixtures shared by the API tests."""
from __future__ import annotations

import pytest

from fhirserver.api.lean import LeanReads


@pytest.fixture()
def served(app):  # noqa: ANN001, ANN201
    """Which requests the lean layer answered (True) or passed on to the Flask app (False)."""
    lean = app.wsgi_app
    assert isinstance(lean, LeanReads)
    seen: list[bool] = []
    orig = lean._try

    def spy(environ):  # noqa: ANN001, ANN202
        got = orig(environ)
        seen.append(got is not None)
        return got

    lean._try = spy
    yield seen
    del lean._try
