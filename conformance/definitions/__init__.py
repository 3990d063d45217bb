"""The HL7 JSON files beside this module (see PROVENANCE.md)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def definitions_dir() -> Path:
    return Path(__file__).parent


@lru_cache(maxsize=None)
def load_definition(name: str) -> Any:
    """A definition file by name, e.g. 'Bundle-searchParams.json' (parsed once per process)."""
    return json.loads((definitions_dir() / name).read_text(encoding="utf-8"))
